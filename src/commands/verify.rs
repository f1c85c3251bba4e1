//! `purgewatch verify [RULE] [--sample N | --all]`: checks the current tree's URLs against the
//! edge (`verify.base_url`) now, prints each stale one, and exits 1 if any is stale. For after a
//! manual deploy, or in a cron job. Sends no purge, writes no state.

use std::process::ExitCode;

use super::{CommandError, load, runtime};
use crate::cli::{Cli, VerifyArgs};
use crate::config::{Config, Rule};
use crate::hashing::stat_and_hash;
use crate::verify::{self, Expect, Verdict, Want};
use crate::walk::walk;

pub(super) fn run(cli: &Cli, args: &VerifyArgs) -> Result<ExitCode, CommandError> {
    let config = load(cli, true)?.config;
    let rules = chosen_rules(&config, args.rule.as_deref())?;
    let rt = runtime()?;
    let http = verify::edge_client();
    let (mut stale, mut unreachable) = (0, 0);
    for rule in rules {
        let Some(v) = &rule.verify else { continue };
        let n = match (args.all, args.sample) {
            (true, _) => usize::MAX,
            (false, Some(n)) => n,
            (false, None) if v.sample > 0 => v.sample,
            _ => 20,
        };
        let expects = sample_tree(rule, n);
        let results = rt.block_on(verify::check_all(&http, &v.base_url, &expects, v.check, None));
        let mut fresh = 0;
        for (e, verdict) in &results {
            match verdict {
                Verdict::Fresh => fresh += 1,
                Verdict::Stale(why) => {
                    stale += 1;
                    outln!("stale: {}{} {why}", v.base_url, e.url);
                }
                Verdict::Unreachable(why) => {
                    unreachable += 1;
                    outln!("unreachable: {}{} {why}", v.base_url, e.url);
                }
            }
        }
        let answered = results
            .iter()
            .filter(|(_, r)| !matches!(r, Verdict::Unreachable(_)))
            .count();
        outln!(
            "rule \"{}\": {} checked on {}, {fresh} fresh, {} stale",
            rule.name,
            results.len(),
            v.base_url,
            answered - fresh
        );
    }
    if stale + unreachable > 0 {
        return Err(CommandError::Failed(format!(
            "{stale} stale URL{}{}",
            if stale == 1 { "" } else { "s" },
            if unreachable > 0 {
                format!(", {unreachable} the edge did not answer for")
            } else {
                String::new()
            }
        )));
    }
    Ok(ExitCode::SUCCESS)
}

/// The rules to verify: the one named (which must have `verify:`), or every rule that has it.
fn chosen_rules<'c>(config: &'c Config, name: Option<&str>) -> Result<Vec<&'c Rule>, CommandError> {
    let rules: Vec<&Rule> = match name {
        Some(name) => {
            let Some(rule) = config.rule(name) else {
                let hint = crate::config::did_you_mean(name, config.rules.iter().map(|r| r.name.as_str()));
                return Err(CommandError::Usage(format!("unknown rule \"{name}\"{hint}")));
            };
            if rule.verify.is_none() {
                return Err(CommandError::Usage(format!(
                    "rule \"{name}\" has no `verify:`: add `verify: {{base_url: https://www.example.com}}` to say where it is served"
                )));
            }
            vec![rule]
        }
        None => config.rules.iter().filter(|r| r.verify.is_some()).collect(),
    };
    if rules.is_empty() {
        return Err(CommandError::Usage(
            "no rule has `verify:`: add `verify: {base_url: https://www.example.com}` to a rule".into(),
        ));
    }
    Ok(rules)
}

/// `n` files of `rule`'s tree spread over it, each expected with the bytes it has now.
fn sample_tree(rule: &Rule, n: usize) -> Vec<Expect> {
    let root = std::fs::canonicalize(&rule.watch).unwrap_or_else(|_| rule.watch.clone());
    let files = walk(&root, &rule.filter(), None, crate::shutdown::Stop::NEVER).files;
    let chosen = verify::spread(files.into_iter().map(|p| (p.clone(), p)).collect(), n);
    chosen
        .into_iter()
        .filter_map(|path| {
            let meta = stat_and_hash(&root.join(&path)).ok().flatten()?;
            Some(Expect {
                url: verify::check_url(rule, &path),
                path,
                want: Want::Bytes(meta.hash),
            })
        })
        .collect()
}

//! `purgewatch verify [RULE] [--sample N | --all]`: checks the current tree's URLs against the
//! edge (`verify.base_url`) now, prints each stale one, and exits 1 if any is stale. For after a
//! manual deploy, or in a cron job. Sends no purge, writes no state.

use std::process::ExitCode;

use super::{CommandError, load, runtime};
use crate::cli::{Cli, VerifyArgs};
use crate::config::Rule;
use crate::manifest::{stat_and_hash, walk};
use crate::route::Filter;
use crate::verify::{self, Expect, Verdict, Want};

pub(super) fn run(cli: &Cli, args: &VerifyArgs) -> Result<ExitCode, CommandError> {
    let config = load(cli, true)?.config;
    let rules: Vec<&Rule> = match &args.rule {
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
        let root = std::fs::canonicalize(&rule.watch).unwrap_or_else(|_| rule.watch.clone());
        let files = walk(&root, &Filter::new(rule), None, crate::shutdown::Stop::NEVER).files;
        let chosen = verify::spread(files.into_iter().map(|p| (p.clone(), p)).collect(), n);
        let expects: Vec<Expect> = chosen
            .into_iter()
            .filter_map(|path| {
                let meta = stat_and_hash(&root.join(&path)).ok().flatten()?;
                Some(Expect {
                    url: verify::check_url(rule, &path),
                    path,
                    want: Want::Bytes(meta.hash),
                })
            })
            .collect();
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
        outln!(
            "rule \"{}\": {} checked on {}, {fresh} fresh, {} stale",
            rule.name,
            results.len(),
            v.base_url,
            results.len()
                - fresh
                - results
                    .iter()
                    .filter(|(_, r)| matches!(r, Verdict::Unreachable(_)))
                    .count()
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

//! `purgewatch purge TARGET [--all | --url PATH... | --pattern REGEX] [--wait] [--dry-run]`:
//! a manual purge through the same planner, delivery ([`deliver::deliver`]), retries and purge
//! history as the daemon.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Duration;

use super::{CommandError, load_with, runtime};
use crate::cli::{Cli, PurgeArgs};
use crate::config::{Config, ConfigError, Diagnostic, LoadOptions};
use crate::config::{RetryPolicy, Shape, Target};
use crate::deliver::{self, JobOutcome, Pacer};
use crate::plan::{self, Item};
use crate::providers::{Provider, http_client};
use crate::request::Request;
use crate::state::Store;

/// How long `--wait` follows a job.
const WAIT_LIMIT: Duration = Duration::from_secs(900);
/// A person is waiting: at most this many attempts, this far apart (the daemon's budget is longer).
const CLI_ATTEMPTS: u32 = 3;
const CLI_BACKOFF_MAX: Duration = Duration::from_secs(5);

pub(super) fn run(cli: &Cli, args: &PurgeArgs) -> Result<ExitCode, CommandError> {
    // Another target's secret is not needed here: only this target's problems stop the purge.
    let loaded = load_with(
        cli,
        LoadOptions {
            dry_run: args.dry_run,
            collect_secret_problems: true,
            ..Default::default()
        },
    )?;
    own_secret_problems(loaded.secret_problems, &args.target)?;
    let config = loaded.config;
    let plans = plans(&config, args)?;
    let http = http_client();
    if args.dry_run {
        let store = Store::open_read_only(&config.state_dir).ok().flatten();
        for (target, requests) in &plans {
            let provider = Provider::new(target, http.clone());
            for req in requests {
                outln!("dry-run: would send to \"{}\": {}", target.name, provider.describe(req));
                if let Some(cost) = provider.cost(req, store.as_ref()) {
                    outln!("  {cost}");
                }
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let rt = runtime()?;
    let pacer = Pacer::default();
    let mut store = match Store::open(&config.state_dir) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("the purge is not recorded in the state directory: {e}");
            None
        }
    };
    let mut failed = Vec::new();
    for (target, requests) in plans {
        if !purge_one(&rt, &pacer, store.as_mut(), &target, requests, args.wait, http.clone())? {
            failed.push(target.name.clone());
        }
    }
    if !failed.is_empty() {
        return Err(CommandError::Failed(format!(
            "purge of \"{}\" failed",
            failed.join("\", \"")
        )));
    }
    Ok(ExitCode::SUCCESS)
}

/// Only `target`'s own secret problems stop the purge; another target's are warnings.
fn own_secret_problems(problems: Vec<(String, Diagnostic)>, target: &str) -> Result<(), CommandError> {
    let mut own = Vec::new();
    for (name, problem) in problems {
        if name == target {
            own.push(problem);
        } else {
            tracing::warn!("{problem} (target \"{name}\" is not used by this command)");
        }
    }
    if !own.is_empty() {
        return Err(ConfigError::Invalid(own).into());
    }
    Ok(())
}

/// The requests for each target `args` names (a fleet's name: each of its endpoints).
fn plans(config: &Config, args: &PurgeArgs) -> Result<Vec<(Target, Vec<Request>)>, CommandError> {
    let members: Vec<Target> = config.members(&args.target).into_iter().cloned().collect();
    if members.is_empty() {
        let names = config
            .targets
            .iter()
            .map(|t| t.name.as_str())
            .chain(config.groups.keys().map(String::as_str));
        let hint = crate::config::did_you_mean(&args.target, names.clone());
        let known: Vec<&str> = names.filter(|n| !n.contains('@')).collect();
        return Err(CommandError::Usage(format!(
            "unknown target \"{}\"{hint}; the rules file defines: {}",
            args.target,
            known.join(", ")
        )));
    }
    let mut plans = Vec::new();
    for target in members {
        let requests = match target.kind.shape() {
            // A target that cannot purge everything at once (nginx): everything is every URL
            // of the trees of the rules that name it, as they are now.
            Shape::Urls { everything: false, .. } if args.all => {
                let urls = every_url(config, &target.name);
                plan::exact(&target, &urls, None, None)
            }
            _ => requests(&target, args)?,
        };
        plans.push((target, requests));
    }
    Ok(plans)
}

/// Sends `requests` to `target` (and, with `wait`, follows their jobs); true when all went well.
fn purge_one(
    rt: &tokio::runtime::Runtime,
    pacer: &Pacer,
    mut store: Option<&mut Store>,
    target: &Target,
    requests: Vec<Request>,
    wait: bool,
    http: reqwest::Client,
) -> Result<bool, CommandError> {
    let provider = Provider::new(target, http);
    let policy = RetryPolicy {
        attempts: target.retry.attempts.min(CLI_ATTEMPTS),
        backoff: target.retry.backoff.min(CLI_BACKOFF_MAX),
        backoff_max: target.retry.backoff_max.min(CLI_BACKOFF_MAX),
    };
    let deliveries = rt.block_on(deliver::deliver(&provider, pacer, &policy, target.rate_limit, requests));
    let mut ok = true;
    for d in &deliveries {
        let id = d.save(store.as_deref_mut(), &target.name, 0);
        match &d.result {
            Ok(acc) => outln!(
                "purged \"{}\": {} (job {})",
                target.name,
                d.desc,
                acc.job_id.as_deref().unwrap_or("-")
            ),
            Err(f) => {
                errln!("target \"{}\": purge failed: {f}", target.name);
                ok = false;
                continue;
            }
        }
        if !wait {
            continue;
        }
        let Some(job) = d.job() else {
            outln!("the provider gave no job id to wait for");
            continue;
        };
        let outcome = rt.block_on(deliver::follow_job(
            &provider,
            pacer,
            target.rate_limit,
            job,
            WAIT_LIMIT,
        ));
        match &outcome {
            JobOutcome::Done(s) => {
                outln!("job {job} finished: {s}");
            }
            JobOutcome::Failed(s) => {
                errln!("target \"{}\": job {job} failed: {s}", target.name);
                ok = false;
            }
            JobOutcome::Unknown(s) => {
                errln!("target \"{}\": could not confirm job {job}: {s}", target.name);
                ok = false;
            }
        }
        deliver::record_job(store.as_deref_mut(), id, &outcome);
    }
    Ok(ok)
}

/// Every URL of the trees of the rules that purge through `target`, as they are on disk now.
fn every_url(config: &crate::config::Config, target: &str) -> Vec<String> {
    let mut urls = BTreeSet::new();
    for rule in config.rules.iter().filter(|r| r.targets.iter().any(|t| t == target)) {
        let filter = rule.filter();
        for path in crate::walk::walk(&rule.watch, &filter, None, crate::shutdown::Stop::NEVER).files {
            urls.extend(plan::urls_for(rule, &path));
        }
    }
    urls.into_iter().collect()
}

/// The requests `args` ask for: a SiteHost target purges its stack; a VIMS target everything,
/// one pattern, or the fewest patterns covering the URLs given.
fn requests(target: &Target, args: &PurgeArgs) -> Result<Vec<Request>, CommandError> {
    Ok(match target.kind.shape() {
        Shape::Whole => {
            if !args.url.is_empty() || args.pattern.is_some() {
                tracing::warn!(target = %target.name, "a SiteHost target purges its whole stack; --url and --pattern only say why");
            }
            vec![Request::Stack]
        }
        Shape::Patterns { max_bytes } => {
            if args.all {
                vec![crate::plan::everything(target)]
            } else if let Some(p) = &args.pattern {
                if p.is_empty() {
                    return Err(CommandError::Usage(
                        "--pattern \"\" matches every URL: use --all to purge everything".into(),
                    ));
                }
                if p != "*" {
                    regex::Regex::new(p)
                        .map_err(|e| CommandError::Usage(format!("--pattern {p:?} is not a valid regex: {e}")))?;
                }
                vec![Request::Pattern(p.clone())]
            } else if !args.url.is_empty() {
                let items: BTreeSet<Item> = args
                    .url
                    .iter()
                    .map(|u| url_path(u).map(Item::Url))
                    .collect::<Result<_, _>>()?;
                plan::patterns(&items, max_bytes)
                    .into_iter()
                    .map(Request::Pattern)
                    .collect()
            } else {
                return Err(nothing_named(target, true));
            }
        }
        Shape::Urls { .. } => {
            if args.pattern.is_some() {
                return Err(CommandError::Usage(format!(
                    "target \"{}\" ({}) purges URLs, not patterns: use --url or --all",
                    target.name,
                    target.kind.type_name()
                )));
            }
            if args.all {
                vec![crate::plan::everything(target)]
            } else if !args.url.is_empty() {
                // A full URL is sent as given (less its fragment and query), a path decoded.
                let urls: Vec<String> = args
                    .url
                    .iter()
                    .map(|u| match u.split_once("://") {
                        Some(_) => Ok(u.split(['#', '?']).next().unwrap_or_default().to_string()),
                        None => url_path(u),
                    })
                    .collect::<Result<_, _>>()?;
                plan::exact(target, &urls, None, None)
            } else {
                return Err(nothing_named(target, false));
            }
        }
    })
}

fn nothing_named(target: &Target, patterns: bool) -> CommandError {
    CommandError::Usage(format!(
        "say what to purge from \"{}\": --all, --url PATH (repeatable){}",
        target.name,
        if patterns { " or --pattern REGEX" } else { "" }
    ))
}

/// The URL path `--url` names, as a browser would send it: a full URL loses its scheme and
/// host (the patterns match the path in every form the CDN may key it by), the query and the
/// fragment go (a pattern matches the URL with or without a query), `%XX` escapes are decoded
/// (the planner writes both spellings), and a path gets its leading `/`. A file whose name holds
/// `?`, `#` or `%` is named encoded: `--url /q%3Fx.html`. An empty URL is refused.
fn url_path(url: &str) -> Result<String, CommandError> {
    let trimmed = url.trim();
    if trimmed.is_empty() {
        return Err(CommandError::Usage(
            "--url \"\" names no URL: give a path like /blog/post.html (or use --all)".into(),
        ));
    }
    let no_fragment = trimmed.split('#').next().unwrap_or_default();
    let no_query = no_fragment.split('?').next().unwrap_or_default();
    let path = match no_query.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => no_query,
    };
    let decoded = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| CommandError::Usage(format!("--url {url:?}: its %-escapes do not decode to UTF-8 text")))?;
    Ok(if decoded.starts_with('/') {
        decoded.into_owned()
    } else {
        format!("/{decoded}")
    })
}

#[cfg(test)]
mod tests {
    use super::url_path;

    #[test]
    fn url_paths() {
        let p = |u: &str| url_path(u).unwrap();
        assert_eq!(p("/blog/a.html"), "/blog/a.html");
        assert_eq!(p("blog/a.html"), "/blog/a.html");
        assert_eq!(p("https://example.com/blog/a.html?v=2#top"), "/blog/a.html");
        assert_eq!(p("https://example.com"), "/");
        assert_eq!(p("/a.html#x"), "/a.html");
        assert_eq!(p("/a.html?x=1"), "/a.html");
        assert_eq!(p("https://example.com/caf%C3%A9%20menu.html"), "/café menu.html");
        assert_eq!(p("/q%3Fx.html"), "/q?x.html");
        assert!(url_path("").is_err() && url_path("  ").is_err());
        assert!(url_path("/%FF.html").is_err());
    }
}

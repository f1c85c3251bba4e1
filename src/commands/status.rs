//! `purgewatch status`: pending purges and the last purge per target, from the state directory.
//! Reads only, so it works while the daemon runs.

use std::collections::BTreeMap;
use std::process::ExitCode;

use super::{CommandError, age, load};
use crate::cli::Cli;
use crate::state::{Store, now_ms};

pub fn run(cli: &Cli) -> Result<ExitCode, CommandError> {
    let config = load(cli, true)?.config;
    let Some(store) = Store::open_read_only(&config.state_dir)? else {
        outln!(
            "no state yet in {} (the daemon has not run with these rules)",
            config.state_dir.display()
        );
        for t in &config.targets {
            outln!(
                "target \"{}\" ({}): nothing pending, never purged",
                t.name,
                t.kind.type_name()
            );
        }
        return Ok(ExitCode::SUCCESS);
    };
    outln!("state: {}", store.path().display());
    let now = now_ms();
    let mut pending: BTreeMap<String, (usize, i64)> = BTreeMap::new();
    for row in store.pending()? {
        let e = pending.entry(row.target).or_insert((0, i64::MAX));
        e.0 += 1;
        e.1 = e.1.min(row.first_seen_ms);
    }
    // Paths that produced events and wait for their debounce count for every target of their rule.
    let mut seen: BTreeMap<String, (usize, i64)> = BTreeMap::new();
    for (rule, _path, first) in store.seen()? {
        for t in config.rule(&rule).map(|r| r.targets.clone()).unwrap_or_default() {
            let e = seen.entry(t).or_insert((0, i64::MAX));
            e.0 += 1;
            e.1 = e.1.min(first);
        }
    }
    let last = store.last_purges()?;
    let mut names: Vec<(String, String)> = config
        .targets
        .iter()
        .map(|t| (t.name.clone(), t.kind.type_name().to_string()))
        .collect();
    for extra in pending.keys().chain(last.keys()) {
        if !names.iter().any(|(n, _)| n == extra) {
            names.push((extra.clone(), "not in the rules file".into()));
        }
    }
    for (name, kind) in names {
        outln!("target \"{name}\" ({kind})");
        let (queued, q_oldest) = pending.get(&name).copied().unwrap_or((0, i64::MAX));
        let (waiting, w_oldest) = seen.get(&name).copied().unwrap_or((0, i64::MAX));
        if queued + waiting == 0 {
            outln!("  pending: none");
        } else {
            let n = queued + waiting;
            let settling = if waiting > 0 {
                format!(" ({waiting} waiting for the debounce)")
            } else {
                String::new()
            };
            let oldest = age(now - q_oldest.min(w_oldest));
            outln!(
                "  pending: {n} file{}{settling}, oldest {oldest} ago",
                if n == 1 { "" } else { "s" }
            );
        }
        match last.get(&name) {
            Some(p) => {
                let job = match (&p.job_id, &p.job_state) {
                    (Some(id), Some(state)) => format!(", job {id}: {state}"),
                    (Some(id), None) => format!(", job {id}"),
                    _ => String::new(),
                };
                let msg = match (&p.result[..], &p.message) {
                    ("failed", Some(m)) => format!(": {m}"),
                    _ => String::new(),
                };
                outln!(
                    "  last purge: {} ago, {} file{}, {}: {}{job}{msg}",
                    age(now - p.at_ms),
                    p.files,
                    if p.files == 1 { "" } else { "s" },
                    p.request,
                    p.result
                );
            }
            None => outln!("  last purge: never"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

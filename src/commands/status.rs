//! `purgewatch status [--json]`: pending purges and the last purge per target, from the state
//! directory. Reads only, so it works while the daemon runs.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Value, json};

use super::{CommandError, age, load_with};
use crate::cli::{Cli, StatusArgs};
use crate::clock::now_ms;
use crate::config::LoadOptions;
use crate::state::{DaemonLock, PurgeRecord, Sending, Store, VerifyRecord};

/// What `status` knows of one target.
struct TargetStatus {
    name: String,
    /// `sitehost`, `vims`, or "not in the rules file" for a target only the state remembers.
    kind: String,
    /// Files queued for the target.
    queued: usize,
    /// Paths that produced events and wait for their debounce.
    waiting: usize,
    /// When the oldest of them was first seen (ms since the epoch).
    oldest_ms: Option<i64>,
    last: Option<PurgeRecord>,
    verified: Option<VerifyRecord>,
    /// The purge on its way to the target, as the daemon running now last said.
    sending: Option<Sending>,
}

pub(super) fn run(cli: &Cli, args: &StatusArgs) -> Result<ExitCode, CommandError> {
    // Only the state is read: no secret is needed, and a missing tree is only a warning.
    let config = load_with(
        cli,
        LoadOptions {
            dry_run: true,
            trees_optional: true,
            ..Default::default()
        },
    )?
    .config;
    let store = Store::open_read_only(&config.state_dir)?;
    let mut state = match &store {
        Some(store) => Recorded::read(store, &config)?,
        None => Recorded::default(),
    };
    let targets = state.targets(&config);
    if args.json {
        let path = store.as_ref().map(|s| s.path().display().to_string());
        let mut v = as_json(path, &targets);
        v["warnings"] = state.warnings.into();
        outln!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    print_where(store.as_ref(), &config)?;
    for w in &state.warnings {
        outln!("warning: {w}");
    }
    let now = now_ms();
    for t in &targets {
        print_target(t, now)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// What the state directory says, per target.
#[derive(Default)]
struct Recorded {
    /// Files queued: how many, and the oldest's first-seen time.
    pending: BTreeMap<String, (usize, i64)>,
    /// Paths with events waiting for their debounce, counted for every target of their rule.
    seen: BTreeMap<String, (usize, i64)>,
    last: BTreeMap<String, PurgeRecord>,
    verified: BTreeMap<String, VerifyRecord>,
    sending: BTreeMap<String, Sending>,
    warnings: Vec<String>,
}

impl Recorded {
    fn read(store: &Store, config: &crate::config::Config) -> Result<Recorded, CommandError> {
        let mut r = Recorded {
            verified: store.last_verifications()?,
            last: store.last_purges()?,
            ..Default::default()
        };
        // Only a daemon running now is sending anything (one that was killed left its rows).
        if DaemonLock::holder(&config.state_dir).is_some() {
            r.sending = store.sending()?;
            r.warnings = store.warnings()?;
        }
        let count = |map: &mut BTreeMap<String, (usize, i64)>, target: String, first: i64| {
            let e = map.entry(target).or_insert((0, i64::MAX));
            e.0 += 1;
            e.1 = e.1.min(first);
        };
        for row in store.pending()? {
            count(&mut r.pending, row.target, row.first_seen_ms);
        }
        for (rule, _path, first) in store.seen()? {
            for t in config.rule(&rule).map(|r| r.targets.clone()).unwrap_or_default() {
                count(&mut r.seen, t, first);
            }
        }
        Ok(r)
    }

    /// Each target of the rules, then those only the state remembers.
    fn targets(&mut self, config: &crate::config::Config) -> Vec<TargetStatus> {
        let mut names: Vec<(String, String)> = config
            .targets
            .iter()
            .map(|t| (t.name.clone(), t.kind.type_name().to_string()))
            .collect();
        for extra in self.pending.keys().chain(self.last.keys()) {
            if !names.iter().any(|(n, _)| n == extra) {
                names.push((extra.clone(), "not in the rules file".into()));
            }
        }
        names
            .into_iter()
            .map(|(name, kind)| {
                let (queued, q_oldest) = self.pending.get(&name).copied().unwrap_or((0, i64::MAX));
                let (waiting, w_oldest) = self.seen.get(&name).copied().unwrap_or((0, i64::MAX));
                let oldest = q_oldest.min(w_oldest);
                TargetStatus {
                    last: self.last.remove(&name),
                    verified: self.verified.remove(&name),
                    sending: self.sending.remove(&name),
                    name,
                    kind,
                    queued,
                    waiting,
                    oldest_ms: (oldest != i64::MAX).then_some(oldest),
                }
            })
            .collect()
    }
}

/// Where the state is (or why there is none yet).
fn print_where(store: Option<&Store>, config: &crate::config::Config) -> Result<(), CommandError> {
    match store {
        Some(s) => outln!("state: {}", s.path().display()),
        None => match crate::state::DaemonLock::holder(&config.state_dir) {
            Some((pid, Some(elsewhere))) => outln!(
                "no state yet in {}: the daemon running{} keeps its state in {} until it restarts (its rules now name this directory)",
                config.state_dir.display(),
                pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
                elsewhere.display()
            ),
            _ => outln!(
                "no state yet in {} (the daemon has not run with these rules)",
                config.state_dir.display()
            ),
        },
    }
    Ok(())
}

/// One target's lines.
fn print_target(t: &TargetStatus, now: i64) -> Result<(), CommandError> {
    outln!("target \"{}\" ({})", t.name, t.kind);
    let n = t.queued + t.waiting;
    if n == 0 {
        outln!("  pending: none");
    } else {
        let settling = match (t.waiting, &t.sending) {
            (0, _) => String::new(),
            (n, None) => format!(" ({n} waiting for the debounce)"),
            (n, Some(_)) => format!(" ({n} changed, compared once the purge under way has ended)"),
        };
        let oldest = age(now - t.oldest_ms.unwrap_or(now));
        outln!(
            "  pending: {n} file{}{settling}, oldest {oldest} ago",
            if n == 1 { "" } else { "s" }
        );
    }
    if let Some(sent) = &t.sending {
        let retry = match (&sent.attempt, &sent.error) {
            (0, _) => String::new(),
            (n, Some(e)) => format!(", retry {n} after: {e}"),
            (n, None) => format!(", retry {n}"),
        };
        outln!(
            "  sending: {} file{} since {} ago{retry}",
            sent.files,
            if sent.files == 1 { "" } else { "s" },
            age(now - sent.since_ms)
        );
    }
    match &t.last {
        Some(p) => print_last(p, now)?,
        None => outln!("  last purge: never"),
    }
    if let Some(v) = &t.verified {
        let detail = v.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default();
        outln!(
            "  last verification: {} ago, {} checked, {} fresh, {} stale{}{detail}",
            age(now - v.at_ms),
            v.checked,
            v.fresh,
            v.stale,
            if v.unreachable > 0 {
                format!(", {} unreachable", v.unreachable)
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// A target's last purge.
fn print_last(p: &PurgeRecord, now: i64) -> Result<(), CommandError> {
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
    Ok(())
}

/// An RFC 3339 time (UTC, seconds) for ms since the epoch.
fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `status --json`: one object with a `targets` object keyed by target name.
fn as_json(state: Option<String>, targets: &[TargetStatus]) -> Value {
    let now = now_ms();
    let targets: serde_json::Map<String, Value> = targets
        .iter()
        .map(|t| {
            let last = t.last.as_ref().map(|p| {
                json!({
                    "outcome": p.result,
                    "at": rfc3339(p.at_ms),
                    "files": p.files,
                    "request": p.request,
                    "job_id": p.job_id,
                    "job_state": p.job_state,
                    "message": p.message,
                })
            });
            let verified = t.verified.as_ref().map(|v| {
                json!({
                    "at": rfc3339(v.at_ms),
                    "checked": v.checked,
                    "fresh": v.fresh,
                    "stale": v.stale,
                    "unreachable": v.unreachable,
                    "detail": v.detail,
                })
            });
            let sending = t.sending.as_ref().map(|s| {
                json!({
                    "since": rfc3339(s.since_ms),
                    "files": s.files,
                    "retries": s.attempt,
                    "last_error": s.error,
                })
            });
            let value = json!({
                "sending": sending,
                "last_verification": verified,
                "type": t.kind,
                "pending_files": t.queued + t.waiting,
                "queued_files": t.queued,
                "waiting_files": t.waiting,
                "oldest_pending_seconds": t.oldest_ms.map(|o| (now - o).max(0) / 1000),
                "last_purge": last,
            });
            (t.name.clone(), value)
        })
        .collect();
    json!({ "state": state, "targets": targets })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_the_contract_fields() {
        let targets = vec![
            TargetStatus {
                name: "cdn".into(),
                kind: "vims".into(),
                queued: 2,
                waiting: 1,
                oldest_ms: Some(now_ms() - 5000),
                last: Some(PurgeRecord {
                    target: "cdn".into(),
                    at_ms: 1_700_000_000_000,
                    files: 3,
                    request: "purge cdn 7".into(),
                    result: "accepted".into(),
                    ..Default::default()
                }),
                verified: None,
                sending: None,
            },
            TargetStatus {
                name: "www".into(),
                kind: "sitehost".into(),
                queued: 0,
                waiting: 0,
                oldest_ms: None,
                last: None,
                verified: None,
                sending: None,
            },
        ];
        let v = as_json(None, &targets);
        assert_eq!(v["targets"]["cdn"]["pending_files"], 3);
        assert_eq!(v["targets"]["cdn"]["last_purge"]["outcome"], "accepted");
        assert_eq!(v["targets"]["cdn"]["last_purge"]["at"], "2023-11-14T22:13:20Z");
        assert!(v["targets"]["www"]["last_purge"].is_null());
        assert_eq!(v["targets"]["www"]["pending_files"], 0);
    }
}

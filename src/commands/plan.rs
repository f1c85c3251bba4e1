//! `purgewatch plan`: compares each watched tree with what was last purged and prints, per
//! target, the files that changed, why each was kept or skipped, and the requests that would go
//! out. Sends nothing, writes nothing.

use std::collections::BTreeMap;
use std::process::ExitCode;

use super::{CommandError, load};
use crate::cli::Cli;
use crate::compare;
use crate::compare::diff::{Diff, Skip};
use crate::config::{Config, Rule, Target};
use crate::hashahead::Record;
use crate::hashing::Budget;
use crate::manifest::Manifest;
use crate::plan;
use crate::providers::{Provider, http_client};
use crate::request::PendingFile;
use crate::route::Verdict;
use crate::state::Store;

/// How long `plan` reads files per rule before it judges the rest by size and mtime.
const READ_FOR: std::time::Duration = std::time::Duration::from_secs(10);

/// Skipped files listed per rule before the rest are counted.
const LIST_LIMIT: usize = 50;

/// What one rule's comparison found.
struct RuleReport {
    lines: Vec<String>,
    changed: Vec<PendingFile>,
}

pub(super) fn run(cli: &Cli) -> Result<ExitCode, CommandError> {
    let config = load(cli, true)?.config;
    let store = Store::open_read_only(&config.state_dir)?;
    let mut manifests: BTreeMap<String, Manifest> = BTreeMap::new();
    let mut reports: BTreeMap<String, RuleReport> = BTreeMap::new();
    for rule in &config.rules {
        let (report, manifest) = compare_rule(rule, store.as_ref())?;
        manifests.extend(manifest.map(|m| (rule.name.clone(), m)));
        reports.insert(rule.name.clone(), report);
    }
    // What the daemon has queued but not sent yet goes out too.
    let mut queued: BTreeMap<String, Vec<PendingFile>> = BTreeMap::new();
    if let Some(s) = &store {
        for row in s.pending()? {
            queued.entry(row.target).or_default().push(row.file);
        }
    }
    let http = http_client();
    for target in &config.targets {
        let files: Vec<PendingFile> = queued.remove(&target.name).unwrap_or_default();
        let feeding: Vec<&RuleReport> = config
            .rules
            .iter()
            .filter(|r| r.targets.contains(&target.name))
            .filter_map(|r| reports.get(&r.name))
            .collect();
        let provider = Provider::new(target, http.clone());
        let shown = Shown {
            config: &config,
            manifests: &manifests,
            store: store.as_ref(),
        };
        print_target(&provider, target, files, &feeding, &shown)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Compares rule `rule`'s tree with its record in `store` as the daemon's rescan would: its
/// report, and its record moved forward (none without a baseline).
fn compare_rule(rule: &Rule, store: Option<&Store>) -> Result<(RuleReport, Option<Manifest>), CommandError> {
    let watch = rule.watch.display().to_string();
    let recorded = match store {
        Some(s) if s.rule_root(&rule.name)?.as_deref() == Some(watch.as_str()) => Some(s.load_manifest(&rule.name)?),
        _ => None,
    };
    let Some(manifest) = recorded else {
        let line = format!(
            "rule \"{}\": {watch}: no baseline yet; the daemon's first start takes the tree as it is and purges nothing",
            rule.name
        );
        let report = RuleReport {
            lines: vec![line],
            changed: vec![],
        };
        return Ok((report, None));
    };
    let at_last_purge = manifest.len();
    // The daemon's own comparison of a whole tree (as after a rescan), nothing known ahead.
    let compared = compare::Job {
        rule: rule.name.clone(),
        root: std::fs::canonicalize(&rule.watch).unwrap_or_else(|_| rule.watch.clone()),
        filter: rule.filter(),
        manifest: std::sync::Arc::new(manifest),
        record: Record::default(),
        scope: compare::Scope::Tree { listed: false },
        list_identical: true,
        // A huge changed file is judged by its size and mtime past this, as the daemon
        // does past max_delay: `plan` answers in seconds whatever the tree holds.
        budget: Budget::until(std::time::Instant::now() + READ_FOR),
    };
    let shared = compared.manifest.clone();
    let compared = compared.run_here();
    let (diff, filtered) = (compared.diff, compared.filtered);
    let manifest = match compared.moved_forward {
        Some(forward) => std::sync::Arc::try_unwrap(forward).unwrap_or_else(|m| (*m).clone()),
        None => {
            let mut m = std::sync::Arc::try_unwrap(shared).unwrap_or_else(|m| (*m).clone());
            m.apply(&diff.updates);
            m
        }
    };
    let lines = report_lines(rule, &watch, at_last_purge, &diff, &filtered);
    let changed = diff
        .changes
        .iter()
        .map(|c| PendingFile {
            rule: rule.name.clone(),
            path: c.path.clone(),
            kind: c.kind,
        })
        .collect();
    Ok((RuleReport { lines, changed }, Some(manifest)))
}

/// What a rule's comparison found, as `plan` prints it: each file to purge, each skipped (the
/// first [`LIST_LIMIT`]), and why.
fn report_lines(
    rule: &Rule,
    watch: &str,
    at_last_purge: usize,
    diff: &Diff,
    filtered: &[(String, Verdict)],
) -> Vec<String> {
    let mut lines = vec![format!(
        "rule \"{}\": {watch} ({} file{} at the last purge)",
        rule.name,
        at_last_purge,
        if at_last_purge == 1 { "" } else { "s" }
    )];
    lines.extend(
        diff.changes
            .iter()
            .map(|c| format!("  purge  {}  ({})", c.path, c.kind.as_str())),
    );
    let mut skipped: Vec<(String, String)> = diff
        .skipped
        .iter()
        .filter(|(_, s)| !matches!(s, Skip::Filtered(_)))
        .map(|(p, s)| (p.clone(), s.describe()))
        .collect();
    skipped.extend(filtered.iter().map(|(p, v)| (p.clone(), v.describe())));
    lines.extend(
        skipped
            .iter()
            .take(LIST_LIMIT)
            .map(|(p, why)| format!("  skip   {p}  ({why})")),
    );
    if skipped.len() > LIST_LIMIT {
        lines.push(format!("  skip   … and {} more", skipped.len() - LIST_LIMIT));
    }
    if diff.changes.is_empty() {
        lines.push("  nothing changed since the last purge".into());
    }
    lines
}

/// What printing a target's plan reads.
struct Shown<'a> {
    config: &'a Config,
    manifests: &'a BTreeMap<String, Manifest>,
    store: Option<&'a Store>,
}

/// One target's plan: `queued` (what the daemon has not sent yet) and what the rules `feeding`
/// it found changed, and the requests that would go out.
fn print_target(
    provider: &Provider,
    target: &Target,
    mut files: Vec<PendingFile>,
    feeding: &[&RuleReport],
    shown: &Shown,
) -> Result<(), CommandError> {
    for report in feeding {
        files.extend(report.changed.iter().cloned());
    }
    files.sort();
    files.dedup();
    let requests = plan::plan(target, &files, &shown.config.rules, shown.manifests);
    outln!(
        "target \"{}\" ({}): {} file{}, {} request{}",
        target.name,
        target.kind.type_name(),
        files.len(),
        if files.len() == 1 { "" } else { "s" },
        requests.len(),
        if requests.len() == 1 { "" } else { "s" }
    );
    for report in feeding {
        for line in &report.lines {
            outln!("  {line}");
        }
    }
    for f in files.iter().filter(|f| !feeding.iter().any(|r| r.changed.contains(f))) {
        outln!(
            "    queued {}  ({}, rule {}, not sent yet by the daemon)",
            f.path,
            f.kind.as_str(),
            f.rule
        );
    }
    for r in &requests {
        outln!("  request: {}", provider.describe(r));
        if let Some(cost) = provider.cost(r, shown.store) {
            outln!("    {cost}");
        }
    }
    Ok(())
}

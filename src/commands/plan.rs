//! `purgewatch plan`: compares each watched tree with what was last purged and prints, per rule,
//! what changed and why each file is kept or skipped, and per target the requests that would go
//! out. Sends nothing, writes nothing.

use std::collections::BTreeMap;
use std::process::ExitCode;

use super::{CommandError, load};
use crate::cli::Cli;
use crate::manifest::{Known, Manifest, Skip, Trust};
use crate::plan::{self, PendingFile};
use crate::providers::{Provider, http_client};
use crate::route::Filter;
use crate::state::Store;

/// Skipped files listed per rule before the rest are counted.
const LIST_LIMIT: usize = 50;

pub fn run(cli: &Cli) -> Result<ExitCode, CommandError> {
    let config = load(cli, true)?.config;
    let store = Store::open_read_only(&config.state_dir)?;
    let mut manifests: BTreeMap<String, Manifest> = BTreeMap::new();
    let mut per_target: BTreeMap<String, Vec<PendingFile>> = BTreeMap::new();
    if let Some(s) = &store {
        for row in s.pending()? {
            per_target.entry(row.target).or_default().push(row.file);
        }
    }
    for rule in &config.rules {
        let filter = Filter::new(rule);
        let watch = rule.watch.display().to_string();
        let root = std::fs::canonicalize(&rule.watch).unwrap_or_else(|_| rule.watch.clone());
        let recorded = match &store {
            Some(s) if s.rule_root(&rule.name)?.as_deref() == Some(watch.as_str()) => {
                Some(s.load_manifest(&rule.name)?)
            }
            _ => None,
        };
        let Some(mut manifest) = recorded else {
            println!(
                "rule \"{}\": {}: no baseline yet; the daemon's first start takes the tree as it is and purges nothing",
                rule.name, watch
            );
            continue;
        };
        let (candidates, filtered) = manifest.everything(&root, &filter);
        let diff = manifest.diff(&root, &candidates, &filter, Trust::Metadata, &Known::new());
        println!(
            "rule \"{}\": {} ({} files at the last purge)",
            rule.name,
            watch,
            manifest.len()
        );
        for c in &diff.changes {
            println!("  purge  {}  ({})", c.path, c.kind.as_str());
        }
        let mut skipped: Vec<(String, String)> = diff
            .skipped
            .iter()
            .filter(|(_, s)| !matches!(s, Skip::Filtered(_)))
            .map(|(p, s)| (p.clone(), s.describe()))
            .collect();
        skipped.extend(filtered.iter().map(|(p, v)| (p.clone(), v.describe())));
        for (p, why) in skipped.iter().take(LIST_LIMIT) {
            println!("  skip   {p}  ({why})");
        }
        if skipped.len() > LIST_LIMIT {
            println!("  skip   … and {} more", skipped.len() - LIST_LIMIT);
        }
        if diff.changes.is_empty() {
            println!("  nothing changed since the last purge");
        }
        manifest.apply(&diff.updates);
        for t in &rule.targets {
            per_target
                .entry(t.clone())
                .or_default()
                .extend(diff.changes.iter().map(|c| PendingFile {
                    rule: rule.name.clone(),
                    path: c.path.clone(),
                    kind: c.kind,
                }));
        }
        manifests.insert(rule.name.clone(), manifest);
    }
    let http = http_client();
    for target in &config.targets {
        let mut files = per_target.remove(&target.name).unwrap_or_default();
        files.sort();
        files.dedup();
        let requests = plan::plan(target, &files, &config.rules, &manifests);
        let provider = Provider::new(target, http.clone());
        println!(
            "target \"{}\" ({}): {} file{}, {} request{}",
            target.name,
            target.kind.type_name(),
            files.len(),
            if files.len() == 1 { "" } else { "s" },
            requests.len(),
            if requests.len() == 1 { "" } else { "s" }
        );
        for r in &requests {
            println!("  {}", provider.describe(r));
        }
    }
    Ok(ExitCode::SUCCESS)
}

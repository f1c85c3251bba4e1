//! Comparing: one rule's record of what happened since its last comparison (dirty paths, hashes
//! taken ahead) against its manifest, giving what changed.
//!
//! A [`Job`] owns everything it needs (a shared handle on the manifest, the record taken from
//! the rule), so the daemon runs it on a blocking thread while its loop goes on serving events,
//! timers, signals and the watchdog; at start-up and at stop it runs in place.
//! [`Job::run`] hands the [`Compared`] result over as soon as it exists and only then frees
//! what the comparison needed (after a 100,000-file storm that takes a while, and nobody needs
//! to wait for it).

pub mod diff;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::hashahead::Record;
use crate::hashing::Budget;
use crate::links::Links;
use crate::manifest::Manifest;
use crate::route::{Filter, Verdict};
use diff::{Ahead, Diff, Look, Trust};

/// What a comparison looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The paths with events, each hashed unless it was hashed ahead.
    Dirty,
    /// The whole tree, trusting size and mtime (a rescan, a catch-up, a swap). `listed`: the
    /// new tree was listed and hashed after the rescan was asked for, so that listing and the
    /// events since stand in for walking it again.
    Tree { listed: bool },
}

/// One rule's comparison, ready to run anywhere.
pub(crate) struct Job {
    pub rule: String,
    pub root: PathBuf,
    pub filter: Filter,
    /// The rule's manifest, shared with the daemon: nobody writes it while the job runs.
    pub manifest: Arc<Manifest>,
    /// What happened since the last comparison (taken from the rule: new events go to a new record).
    pub record: Record,
    pub scope: Scope,
    /// List identical rewrites in [`Diff::skipped`] (a dry run, or debug logging).
    pub list_identical: bool,
    /// How long files may be read: past it, what is left is judged by its metadata.
    pub budget: Budget,
}

/// A comparison that moves at least this many manifest entries (a swap refreshes every file of
/// the tree) builds the moved-forward manifest itself, off the daemon's loop: applying 100,000
/// entries there holds it for ~15 ms. Below it, the daemon applies [`Diff::updates`] and
/// [`Diff::refreshed`] in place (≈ 0.15 µs each), which needs no second copy of the manifest.
pub(crate) const MOVE_FORWARD_HERE: usize = 10_000;

/// What a comparison found.
#[derive(Debug)]
pub(crate) struct Compared {
    pub rule: String,
    pub diff: Diff,
    /// The rule's manifest with the diff's refreshed metadata and updates applied, when there
    /// were at least [`MOVE_FORWARD_HERE`] of them; else the daemon applies them.
    pub moved_forward: Option<Arc<Manifest>>,
    /// The tree's directory symlinks as this comparison found them.
    pub links: Links,
    /// Files a whole-tree walk met and the rule's filters keep out, with why (only when
    /// identical rewrites are listed too: `plan`, a dry run, debug logging).
    pub filtered: Vec<(String, Verdict)>,
    /// Paths compared.
    pub candidates: usize,
    /// Paths the record held (events and hashes taken ahead).
    pub recorded: usize,
    /// Time spent finding the candidates, and comparing them.
    pub expand: Duration,
    pub compare: Duration,
}

/// What a comparison looks at.
struct Tree<'a> {
    root: &'a Path,
    filter: &'a Filter,
    manifest: &'a Manifest,
    stop: crate::shutdown::Stop,
}

impl Tree<'_> {
    /// The paths to compare for `scope`, how far their metadata is trusted, and (a walk of the
    /// whole tree, when `list_identical`) the files the filters keep out. `links` become the
    /// tree's directory symlinks as the walks found them.
    fn candidates(
        &self,
        scope: Scope,
        record: &Record,
        known: &impl Ahead,
        links: &mut Links,
        list_identical: bool,
    ) -> (BTreeSet<String>, Trust, Vec<(String, Verdict)>) {
        let Tree {
            root,
            filter,
            manifest,
            stop,
        } = *self;
        match scope {
            Scope::Tree { listed: true } => {
                // Files already found to hold the manifest's bytes are not compared again.
                let mut c = manifest.expand(root, record.paths_to_compare(), filter, known, links, stop);
                c.extend(record.tree_lacks(manifest).map(str::to_string));
                (c, Trust::Metadata, Vec::new())
            }
            Scope::Tree { listed: false } => {
                let (c, walked_out, found) = manifest.everything(root, filter, stop);
                *links = found;
                let filtered = if list_identical { walked_out } else { Vec::new() };
                (c, Trust::Metadata, filtered)
            }
            Scope::Dirty => (
                manifest.expand(root, record.dirty_to_compare(), filter, known, links, stop),
                Trust::Content,
                Vec::new(),
            ),
        }
    }
}

impl Job {
    /// Compares, hands the result to `done`, then frees the record and the candidate list.
    pub(crate) fn run(self, done: impl FnOnce(Compared)) {
        let Job {
            rule,
            root,
            filter,
            manifest,
            record,
            scope,
            list_identical,
            budget,
        } = self;
        let started = Instant::now();
        let known = record.known(&manifest);
        // The tree's directory symlinks: those still there, and those its walks meet.
        let mut links = manifest.links().clone();
        links.retain_valid(&root);
        let tree = Tree {
            root: &root,
            filter: &filter,
            manifest: &manifest,
            stop: budget.stop,
        };
        let (mut candidates, trust, filtered) = tree.candidates(scope, &record, &known, &mut links, list_identical);
        // A file changed below a linked directory changed at the link's path too.
        links.add_aliases(&mut candidates);
        let expand = started.elapsed();
        let look = Look {
            trust,
            list_identical,
            budget,
        };
        let diff = manifest.diff(&root, &candidates, &filter, &known, look);
        let moved_forward = (diff.updates.len() + diff.refreshed.len() >= MOVE_FORWARD_HERE).then(|| {
            let mut m = (*manifest).clone();
            m.apply(&diff.refreshed);
            m.apply(&diff.updates);
            m.set_links(links.clone());
            Arc::new(m)
        });
        let compared = Compared {
            rule,
            diff,
            moved_forward,
            candidates: candidates.len(),
            recorded: record.recorded(),
            links,
            filtered,
            expand,
            compare: started.elapsed() - expand,
        };
        // The daemon moves the manifest forward once the result is in: its handle goes first.
        drop(manifest);
        done(compared);
        drop(candidates);
        drop(record);
    }

    /// Runs in place and returns the result.
    pub(crate) fn run_here(self) -> Compared {
        let mut out = None;
        self.run(|c| out = Some(c));
        out.expect("Job::run always calls done")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Rule;
    use crate::request::ChangeKind;
    use crate::shutdown::Stop;

    fn job(dir: &std::path::Path, manifest: Manifest, record: Record, scope: Scope) -> Job {
        Job {
            rule: "site".into(),
            root: dir.to_path_buf(),
            filter: Rule::new("site", dir).filter(),
            manifest: Arc::new(manifest),
            record,
            scope,
            list_identical: true,
            budget: Budget::OPEN,
        }
    }

    #[test]
    fn dirty_paths_are_hashed_and_only_changed_bytes_are_changes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("same.html"), "same").unwrap();
        std::fs::write(dir.path().join("edited.html"), "old").unwrap();
        let filter = job(dir.path(), Manifest::default(), Record::default(), Scope::Dirty).filter;
        let base = Manifest::baseline(dir.path(), &filter, Stop::NEVER).unwrap();
        std::fs::write(dir.path().join("same.html"), "same").unwrap();
        std::fs::write(dir.path().join("edited.html"), "new").unwrap();
        std::fs::write(dir.path().join("added.html"), "added").unwrap();
        let mut record = Record::default();
        for (i, p) in ["same.html", "edited.html", "added.html"].into_iter().enumerate() {
            record.event(p, i as u64 + 1, false);
        }
        let shared = Arc::new(base);
        let mut j = job(dir.path(), Manifest::default(), record, Scope::Dirty);
        j.manifest = shared.clone();
        let mut handed = None;
        j.run(|c| {
            // The job's handle on the manifest is gone by the time the result is handed over.
            assert_eq!(Arc::strong_count(&shared), 1);
            handed = Some(c);
        });
        let c = handed.unwrap();
        let mut got: Vec<(&str, ChangeKind)> = c.diff.changes.iter().map(|c| (c.path.as_str(), c.kind)).collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("added.html", ChangeKind::Created),
                ("edited.html", ChangeKind::Modified)
            ]
        );
        assert_eq!(c.candidates, 3);
        assert_eq!(c.recorded, 3);
        assert_eq!(c.diff.identical, 1);
        assert!(c.moved_forward.is_none(), "a small comparison is applied by the daemon");
    }

    /// A comparison that moves many entries (every file of a swapped-in tree has a new mtime)
    /// hands back the manifest moved forward: the daemon's loop only swaps it in.
    #[test]
    fn a_big_comparison_hands_back_the_manifest_moved_forward() {
        let dir = tempfile::tempdir().unwrap();
        let n = MOVE_FORWARD_HERE + 1;
        for i in 0..n {
            std::fs::write(dir.path().join(format!("{i}.html")), i.to_string()).unwrap();
        }
        std::fs::write(dir.path().join("edited.html"), "old").unwrap();
        let filter = job(dir.path(), Manifest::default(), Record::default(), Scope::Dirty).filter;
        let base = Manifest::baseline(dir.path(), &filter, Stop::NEVER).unwrap();
        // Every file touched (same bytes, new mtime), one edited, one removed.
        let later = std::time::SystemTime::now() + Duration::from_secs(60);
        for i in 0..n {
            let f = std::fs::File::options()
                .write(true)
                .open(dir.path().join(format!("{i}.html")))
                .unwrap();
            f.set_modified(later).unwrap();
        }
        std::fs::write(dir.path().join("edited.html"), "new").unwrap();
        std::fs::remove_file(dir.path().join("0.html")).unwrap();
        let c = job(
            dir.path(),
            base.clone(),
            Record::default(),
            Scope::Tree { listed: false },
        )
        .run_here();
        let forward = c.moved_forward.expect("moved forward by the job");
        let mut applied = base;
        applied.apply(&c.diff.refreshed);
        applied.apply(&c.diff.updates);
        assert_eq!(*forward, applied);
        assert_eq!(
            *forward,
            Manifest::baseline(dir.path(), &filter, Stop::NEVER).unwrap(),
            "the manifest is the disk"
        );
        assert_eq!(c.diff.changes.len(), 2);
    }

    #[test]
    fn a_whole_tree_comparison_finds_what_no_event_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("blog")).unwrap();
        std::fs::write(dir.path().join("blog/a.html"), "a").unwrap();
        std::fs::write(dir.path().join("gone.html"), "g").unwrap();
        let filter = job(dir.path(), Manifest::default(), Record::default(), Scope::Dirty).filter;
        let base = Manifest::baseline(dir.path(), &filter, Stop::NEVER).unwrap();
        std::fs::remove_file(dir.path().join("gone.html")).unwrap();
        std::fs::write(dir.path().join("blog/b.html"), "b").unwrap();
        // No events at all: only a whole-tree comparison sees these.
        let dirty = job(dir.path(), base.clone(), Record::default(), Scope::Dirty).run_here();
        assert!(dirty.diff.changes.is_empty());
        let tree = job(dir.path(), base, Record::default(), Scope::Tree { listed: false }).run_here();
        let mut got: Vec<(&str, ChangeKind)> = tree.diff.changes.iter().map(|c| (c.path.as_str(), c.kind)).collect();
        got.sort();
        assert_eq!(
            got,
            [("blog/b.html", ChangeKind::Created), ("gone.html", ChangeKind::Deleted)]
        );
    }
}

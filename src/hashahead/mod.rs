//! Hashing ahead: while a batch waits out its debounce, a worker thread ([`worker`]) hashes the
//! files that finished changing and whole new trees after a deploy swap, and each rule's
//! [`Record`] keeps what it found, so that the comparison at the end of the debounce
//! ([`crate::compare`]) is mostly lookups.
//!
//! A result is only as good as the moment it was taken: every event bumps a sequence number, and
//! a result counts only if no event came for that path after its job was queued (nor a
//! comparison, nor a new tree swapped in). What a comparison reads is a [`Known`]
//! per path: unknown (look at the disk), gone, or a file's metadata and hash.

use std::path::Path;

use crate::manifest::{FileMeta, Manifest};

mod ahead;
mod record;
mod worker;

pub use ahead::{Ahead, Known, NothingAhead};

pub(crate) use record::{Found, Record, judge};
pub(crate) use worker::{Done, Job, Rewatch, Worker};

/// What taking a result of the worker into a rule's record did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Taken {
    /// Files found to hold the manifest's bytes under new metadata: the manifest moved forward
    /// for them (to be written to the state directory, which is not urgent).
    pub refreshed: Vec<String>,
    /// The whole tree hashed by this job has been recorded: a batch held for it may go.
    pub tree_listed: Option<u64>,
}

impl Record {
    /// Takes a result of the worker for the rule whose tree is at `root` now, judged against
    /// its `manifest`. Results from a tree that is no longer the rule's, and hashes overtaken by
    /// an event or a comparison, are dropped.
    pub(crate) fn take(&mut self, manifest: &mut Manifest, root: &Path, done: Done) -> Taken {
        let mut taken = Taken::default();
        let (files, tree) = match done {
            Done::Files { files, .. } => (files, None),
            Done::TreePart {
                root: r, seq, files, ..
            } => {
                if r != root {
                    return taken;
                }
                let files = files.into_iter().map(|(rel, meta)| (rel, seq, Some(meta))).collect();
                (files, Some(seq))
            }
            // The daemon's to handle (see `Daemon::on_hashed`).
            Done::Rewatched { .. } => return taken,
            Done::TreeListed {
                root: r, seq, links, ..
            } => {
                if r == root {
                    self.tree_listed(seq);
                    manifest.set_links(links);
                }
                taken.tree_listed = Some(seq);
                return taken;
            }
        };
        self.take_hashes(manifest, files, tree, &mut taken.refreshed);
        taken
    }

    /// Records hashes taken ahead (`tree`: as part of the tree hashed by job `tree`). Same bytes
    /// with new metadata move the manifest forward now, so that only a flag is kept per file.
    fn take_hashes(
        &mut self,
        manifest: &mut Manifest,
        files: Vec<(String, u64, Option<FileMeta>)>,
        tree: Option<u64>,
        refreshed: &mut Vec<String>,
    ) {
        for (rel, seq, result) in files {
            let wanted = if tree.is_some() {
                self.wants_tree(seq)
            } else {
                self.wants(&rel, seq)
            };
            if !wanted {
                continue;
            }
            let (found, meta) = judge(manifest, &rel, result);
            if found == Found::Same
                && let Some(new) = meta
            {
                manifest.set(&rel, new);
                refreshed.push(rel.clone());
            }
            if tree.is_some() {
                self.found_in_tree(manifest, rel, seq, found, meta);
            } else {
                self.found(rel, seq, found, meta);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::record::tests::meta;
    use super::*;
    use super::{Ahead, Known};

    #[test]
    fn same_bytes_move_the_manifest_forward_and_a_stale_hash_is_dropped() {
        let mut m = Manifest::from_entries([("a".to_string(), meta(1)), ("b".to_string(), meta(2))]);
        let mut r = Record::default();
        r.event("a", 1, false);
        r.event("b", 2, false);
        r.event("b", 3, false);
        let newer = FileMeta {
            mtime_ns: 50,
            ..meta(1)
        };
        let files = vec![("a".to_string(), 1, Some(newer)), ("b".to_string(), 2, Some(meta(9)))];
        let taken = r.take(
            &mut m,
            Path::new("/site"),
            Done::Files {
                rule: "r".into(),
                files,
            },
        );
        assert_eq!(taken.refreshed, ["a"]);
        assert_eq!(m.get("a"), Some(&newer));
        assert_eq!(r.known(&m).known("a"), Known::File(newer));
        // b's hash was queued before its last event: it counts for nothing.
        assert_eq!(r.known(&m).known("b"), Known::Unknown);
    }

    #[test]
    fn a_tree_from_a_directory_that_is_no_longer_the_rules_is_dropped() {
        let mut m = Manifest::from_entries([("a".to_string(), meta(1)), ("gone".to_string(), meta(3))]);
        let mut r = Record::default();
        let part = |root: &str| Done::TreePart {
            rule: "r".into(),
            root: PathBuf::from(root),
            seq: 4,
            files: vec![("a".to_string(), meta(1)), ("new".to_string(), meta(2))],
        };
        assert_eq!(
            r.take(&mut m, Path::new("/releases/2"), part("/releases/1")),
            Taken::default()
        );
        assert_eq!(r.recorded(), 0);
        r.take(&mut m, Path::new("/releases/2"), part("/releases/2"));
        let listed = Done::TreeListed {
            rule: "r".into(),
            root: PathBuf::from("/releases/2"),
            seq: 4,
            links: Default::default(),
        };
        assert_eq!(r.take(&mut m, Path::new("/releases/2"), listed).tree_listed, Some(4));
        // a is marked (same bytes), new differs, gone is what the tree lacks.
        assert_eq!(r.known(&m).known("a"), Known::File(meta(1)));
        assert_eq!(r.known(&m).known("new"), Known::File(meta(2)));
        assert_eq!(r.tree_lacks(&m).collect::<Vec<_>>(), ["gone"]);
        assert!(r.tree_covers(3));
        assert!(r.known(&m).needs_walk("x"));
    }
}

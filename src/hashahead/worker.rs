//! The hashing thread: it hashes the files that finished changing (closed after writing, renamed
//! into place, removed) and whole new trees after a deploy swap, and sends the results back.
//! Before it lists a swapped-in tree it watches it (see [`Rewatch`]): off the daemon's loop,
//! which adding a watch per directory of a 100,000-file tree would hold for ~90 ms.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc::UnboundedSender;

use crate::hashing::stat_and_hash;
use crate::manifest::FileMeta;
use crate::route::Filter;
use crate::shutdown::Stop;
use crate::walk::walk;

pub(crate) enum Job {
    /// Files that finished changing, each with the sequence number of its last event (one job
    /// per batch of events, so that a storm does not wake the worker once per file).
    Files {
        rule: String,
        root: PathBuf,
        files: Vec<(String, u64)>,
    },
    Tree {
        rule: String,
        root: PathBuf,
        filter: Filter,
        seq: u64,
        /// Watch the tree first (it was swapped in). Watching before listing keeps every file
        /// covered: one written before its directory is watched is in the listing, one written
        /// after has an event.
        rewatch: Option<Rewatch>,
    },
}

/// A swapped-in tree to watch in place of the old one.
pub(crate) struct Rewatch {
    pub watcher: Arc<Mutex<crate::watch::Watcher>>,
    pub old_root: PathBuf,
}

pub(crate) enum Done {
    /// Per file: its path, the job's sequence number, and `None` when the path is not a regular
    /// file (gone). Unreadable files and directories are left out: the comparison looks itself.
    Files {
        rule: String,
        files: Vec<(String, u64, Option<FileMeta>)>,
    },
    /// Part of a whole tree (job `seq`) hashed after a swap. Parts stream back as they are
    /// hashed, so that 100,000 results are never held in one place.
    TreePart {
        rule: String,
        root: PathBuf,
        seq: u64,
        files: Vec<(String, FileMeta)>,
    },
    /// Every part of the tree has been sent: together they list the whole tree, whose
    /// directory symlinks are `links`.
    TreeListed {
        rule: String,
        root: PathBuf,
        seq: u64,
        links: crate::links::Links,
    },
    /// A swapped-in tree is watched (before it was listed), or could not be.
    Rewatched {
        rule: String,
        root: PathBuf,
        result: Result<(), crate::watch::WatchError>,
    },
}

impl Done {
    /// The rule whose files these are.
    pub(crate) fn rule(&self) -> &str {
        match self {
            Done::Files { rule, .. }
            | Done::TreePart { rule, .. }
            | Done::TreeListed { rule, .. }
            | Done::Rewatched { rule, .. } => rule,
        }
    }
}

/// Files hashed per result sent back (each result is one turn of the daemon's loop: ~5 ms).
const RESULT_CHUNK: usize = 256;

pub(crate) struct Worker {
    tx: std::sync::mpsc::Sender<Job>,
}

impl Worker {
    /// `stop` ends a walk of a new tree early (a stop was asked for).
    pub(crate) fn start(done: UnboundedSender<Done>, stop: crate::shutdown::Stop) -> Worker {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("purgewatch-hash".into())
            .spawn(move || {
                crate::threads::background();
                for job in rx {
                    let sent = match job {
                        Job::Files { rule, root, files } => hash_files(&done, rule, &root, &files),
                        Job::Tree {
                            rule,
                            root,
                            filter,
                            seq,
                            rewatch,
                        } => {
                            let tree = NewTree { rule, root, seq };
                            rewatch.is_none_or(|r| tree.rewatch(&done, r)) && tree.hash(&done, &filter, stop)
                        }
                    };
                    // The daemon is gone.
                    if !sent {
                        return;
                    }
                }
            })
            .expect("start the hashing thread");
        Worker { tx }
    }

    pub(crate) fn send(&self, job: Job) {
        // The worker only stops with the daemon.
        let _ = self.tx.send(job);
    }
}

/// Hashes `files` of `rule` (with their sequence numbers), sending results back in chunks, so
/// that the first are usable before the last of a big batch is hashed. Returns whether the
/// daemon took them.
fn hash_files(done: &UnboundedSender<Done>, rule: String, root: &Path, files: &[(String, u64)]) -> bool {
    for chunk in files.chunks(RESULT_CHUNK) {
        let files = chunk
            .iter()
            .filter_map(|(rel, seq)| stat_and_hash(&root.join(rel)).ok().map(|r| (rel.clone(), *seq, r)))
            .collect();
        let msg = Done::Files {
            rule: rule.clone(),
            files,
        };
        if done.send(msg).is_err() {
            return false;
        }
    }
    true
}

/// A tree swapped in for a rule, hashed whole under sequence number `seq`.
struct NewTree {
    rule: String,
    root: PathBuf,
    seq: u64,
}

impl NewTree {
    /// Watches the new tree instead of the old one (or refreshes the watch of the same
    /// directory). Returns whether the daemon took the result.
    fn rewatch(&self, done: &UnboundedSender<Done>, Rewatch { watcher, old_root }: Rewatch) -> bool {
        let started = std::time::Instant::now();
        let result = {
            let mut w = watcher.lock().unwrap_or_else(|e| e.into_inner());
            if old_root == self.root {
                w.refresh(&self.root)
            } else {
                w.remove(&old_root, true);
                w.add(&self.root, true)
            }
        };
        tracing::debug!(rule = %self.rule, ms = started.elapsed().as_millis() as u64, "watching the new tree");
        let msg = Done::Rewatched {
            rule: self.rule.clone(),
            root: self.root.clone(),
            result,
        };
        done.send(msg).is_ok()
    }

    /// Lists and hashes the tree, sending its files in parts and then its listing. Returns
    /// whether the daemon took it.
    fn hash(self, done: &UnboundedSender<Done>, filter: &Filter, stop: Stop) -> bool {
        let started = std::time::Instant::now();
        let walked = walk(&self.root, filter, None, stop);
        let (paths, links) = (walked.files, walked.links);
        let n = paths.len();
        // Read whole, whatever a stop says: the tree's batch waits for it.
        crate::hashing::hash_spread(&self.root, paths, RESULT_CHUNK, Stop::NEVER, |files| {
            let _ = done.send(Done::TreePart {
                rule: self.rule.clone(),
                root: self.root.clone(),
                seq: self.seq,
                files,
            });
        });
        tracing::debug!(
            rule = %self.rule,
            files = n,
            ms = started.elapsed().as_millis() as u64,
            "hashed the new tree"
        );
        let msg = Done::TreeListed {
            rule: self.rule,
            root: self.root,
            seq: self.seq,
            links,
        };
        done.send(msg).is_ok()
    }
}

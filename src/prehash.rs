//! Hashing ahead: while a batch waits out its debounce, a worker thread hashes the files that
//! finished changing (closed after writing, renamed into place, removed) and whole new trees after
//! a deploy swap, so that the comparison at the end of the debounce is mostly lookups.
//!
//! A result is only as good as the moment it was taken: every event bumps a sequence number, and
//! the daemon keeps a result only if no event came for that path after the job was queued.

use std::path::{Path, PathBuf};

use tokio::sync::mpsc::UnboundedSender;

use crate::manifest::{FileMeta, stat_and_hash, walk};
use crate::route::Filter;

pub enum Job {
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
    },
}

pub enum Done {
    /// Per file: its path, the job's sequence number, and `None` when the path is not a regular
    /// file (gone). Unreadable files and directories are left out: the comparison looks itself.
    Files {
        rule: String,
        files: Vec<(String, u64, Option<FileMeta>)>,
    },
    Tree {
        rule: String,
        root: PathBuf,
        seq: u64,
        files: Vec<(String, FileMeta)>,
    },
}

/// Files hashed per result sent back.
const RESULT_CHUNK: usize = 1024;

pub struct Prehasher {
    tx: std::sync::mpsc::Sender<Job>,
}

impl Prehasher {
    pub fn start(done: UnboundedSender<Done>) -> Prehasher {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("purgewatch-hash".into())
            .spawn(move || {
                for job in rx {
                    let msg = match job {
                        Job::Files { rule, root, files } => {
                            // Results go back in chunks, so the first are usable before the last
                            // of a big batch is hashed.
                            for chunk in files.chunks(RESULT_CHUNK) {
                                let files = chunk
                                    .iter()
                                    .filter_map(|(rel, seq)| {
                                        stat_and_hash(&root.join(rel)).ok().map(|r| (rel.clone(), *seq, r))
                                    })
                                    .collect();
                                if done
                                    .send(Done::Files {
                                        rule: rule.clone(),
                                        files,
                                    })
                                    .is_err()
                                {
                                    return;
                                }
                            }
                            continue;
                        }
                        Job::Tree {
                            rule,
                            root,
                            filter,
                            seq,
                        } => {
                            let started = std::time::Instant::now();
                            let files = hash_tree(&root, walk(&root, &filter, None).files);
                            tracing::debug!(
                                rule = %rule,
                                files = files.len(),
                                ms = started.elapsed().as_millis() as u64,
                                "hashed the new tree"
                            );
                            Done::Tree { rule, root, seq, files }
                        }
                    };
                    if done.send(msg).is_err() {
                        return;
                    }
                }
            })
            .expect("start the hashing thread");
        Prehasher { tx }
    }

    pub fn send(&self, job: Job) {
        // The worker only stops with the daemon.
        let _ = self.tx.send(job);
    }
}

/// Hashes `paths` under `root` on every core (a swapped-in tree is hashed while the batch waits).
fn hash_tree(root: &Path, paths: Vec<String>) -> Vec<(String, FileMeta)> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .max(1);
    let chunk = paths.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = paths
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .filter_map(|rel| match stat_and_hash(&root.join(rel)) {
                            Ok(Some(meta)) => Some((rel.clone(), meta)),
                            _ => None,
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    })
}

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
    File {
        rule: String,
        root: PathBuf,
        rel: String,
        seq: u64,
    },
    Tree {
        rule: String,
        root: PathBuf,
        filter: Filter,
        seq: u64,
    },
}

pub enum Done {
    /// `result` is `None` when the path is not a regular file (gone).
    File {
        rule: String,
        rel: String,
        seq: u64,
        result: Option<FileMeta>,
    },
    Tree {
        rule: String,
        root: PathBuf,
        seq: u64,
        files: Vec<(String, FileMeta)>,
    },
}

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
                        Job::File { rule, root, rel, seq } => match stat_and_hash(&root.join(&rel)) {
                            Ok(result) => Done::File { rule, rel, seq, result },
                            // A directory or an unreadable file: the comparison looks itself.
                            Err(_) => continue,
                        },
                        Job::Tree {
                            rule,
                            root,
                            filter,
                            seq,
                        } => {
                            let files = hash_tree(&root, walk(&root, &filter, None).files);
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

//! The comparison itself: which paths to look at after events ([`Manifest::expand`]) or for a
//! whole tree ([`Manifest::everything`]), and what differs from the record
//! ([`Manifest::diff`]) — by what was learnt ahead, by size and mtime, or by the bytes, read
//! within a [`crate::hashing::Budget`]. [`crate::manifest`] is the record and its storage form;
//! this module is what a comparison does with it.

use std::collections::BTreeSet;
use std::io;
use std::path::Path;
use std::time::Duration;

pub use crate::hashahead::{Ahead, Known, NothingAhead};
use crate::hashing::{Budget, Late, hash_within, mtime_ns};
use crate::links::Links;
use crate::manifest::{FileMeta, Manifest, now_ns};
use crate::request::ChangeKind;
use crate::route::{Filter, Verdict};
use crate::shutdown::Stop;
use crate::walk::walk;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub path: String,
    pub kind: ChangeKind,
}

/// Why a path that was looked at is not purged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Same bytes as at the last purge (an identical rewrite or a `touch`).
    Identical,
    Filtered(Verdict),
    /// Could not be read; the last known state is kept.
    Unreadable(String),
    /// Could not be read for now (out of file descriptors or memory, an I/O error): the last
    /// known state is kept and the file is read again at the next batch, never dropped.
    NotYet(String),
    /// Not read within the batch's time, with the size and mtime recorded but recent enough
    /// for a rewrite to have kept them: read again at the next batch.
    Late,
}

/// Whether a failure to read a file may pass by itself: out of descriptors (EMFILE, ENFILE) or
/// memory, an I/O error, interrupted, busy. A file unreadable for good (permissions) is not.
pub fn passing(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EMFILE
                | libc::ENFILE
                | libc::ENOMEM
                | libc::ENOBUFS
                | libc::EIO
                | libc::EAGAIN
                | libc::EINTR
                | libc::EBUSY
                | libc::ETIMEDOUT
        )
    )
}

impl Skip {
    pub fn describe(&self) -> String {
        match self {
            Skip::Identical => "identical content".into(),
            Skip::Filtered(v) => v.describe(),
            Skip::Unreadable(e) => format!("unreadable: {e}"),
            Skip::NotYet(e) => format!("not read yet: {e}; read again at the next batch"),
            Skip::Late => "not read within max_delay; read again at the next batch".into(),
        }
    }
}

/// How much to trust size and mtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trust {
    /// A file with the recorded size and mtime is unchanged (start-up catch-up), unless its mtime
    /// is within [`RACY_WINDOW`] of now: a rewrite in the same timestamp tick keeps the mtime.
    Metadata,
    /// Hash every candidate (it produced an event).
    Content,
}

/// Files modified this recently are hashed even when size and mtime match.
pub const RACY_WINDOW: Duration = Duration::from_secs(10);

/// Manifest entries to write: `None` removes the path.
pub(crate) type Updates = Vec<(String, Option<FileMeta>)>;

/// The result of comparing candidates with the manifest.
#[derive(Debug, Default)]
pub struct Diff {
    pub changes: Vec<Change>,
    /// Paths not purged and why (identical rewrites only when asked for: there can be many).
    pub skipped: Vec<(String, Skip)>,
    /// Identical rewrites (same bytes, whether or not they are listed in `skipped`).
    pub identical: usize,
    list_identical: bool,
    /// New manifest entries for the changes (`None` removes one), to apply once they are queued.
    pub updates: Updates,
    /// New metadata for files whose bytes did not change: not urgent (a lost one only costs a
    /// re-hash), so the daemon writes them after the purge is on its way.
    pub refreshed: Updates,
    /// Files hashed to reach the verdict.
    pub hashed: usize,
    /// Files not read in time, purged by their metadata.
    pub unhashed: usize,
}

/// How a comparison looks at the disk.
#[derive(Clone, Copy, Debug)]
pub struct Look {
    pub trust: Trust,
    /// List identical rewrites in [`Diff::skipped`] (a dry run, or debug logging).
    pub list_identical: bool,
    pub budget: Budget,
}

/// Candidates bigger than this are read after all the others: one big file does not use up
/// the time the small ones of its batch need.
impl Look {
    /// No time limit but a stop's.
    pub fn new(trust: Trust, list_identical: bool) -> Look {
        Look {
            trust,
            list_identical,
            budget: Budget::OPEN,
        }
    }
}

pub const READ_LAST: u64 = 16 * 1024 * 1024;

impl Manifest {
    /// The paths to compare after events on `dirty` paths: a file stands for itself; a directory
    /// (new, renamed in, or gone) for every file below it, on disk and in the manifest. The
    /// directory symlinks met walking new directories go into `links`. Walks end early once
    /// `stop` is asked to.
    pub fn expand<'a>(
        &self,
        root: &Path,
        dirty: impl IntoIterator<Item = &'a str>,
        filter: &Filter,
        known: &(impl Ahead + ?Sized),
        links: &mut Links,
        stop: Stop,
    ) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for rel in dirty {
            if let Known::File(_) = known.known(rel) {
                out.insert(rel.to_string());
                continue;
            }
            let abs = root.join(rel);
            let meta = std::fs::metadata(&abs);
            // A file replaced by a directory of the same name: the file is gone (compared, it is
            // found a directory), whatever the directory holds.
            if meta.as_ref().is_ok_and(|m| m.is_dir()) && self.get(rel).is_some() {
                out.insert(rel.to_string());
            }
            match meta {
                Ok(m) if m.is_dir() && !known.needs_walk(rel) => {}
                Ok(m) if m.is_dir() => {
                    if !filter.excludes_dir(rel) {
                        let walked = walk(&abs, filter, Some(rel), stop);
                        out.extend(walked.files);
                        links.extend(walked.links);
                    }
                    out.extend(self.under(rel).map(str::to_string));
                }
                Ok(_) => {
                    out.insert(rel.to_string());
                }
                Err(_) => {
                    out.insert(rel.to_string());
                    out.extend(self.under(rel).map(str::to_string));
                }
            }
        }
        out
    }

    /// Every path on disk and in the manifest: a full rescan. With the paths filtered out,
    /// and the tree's directory symlinks.
    pub fn everything(
        &self,
        root: &Path,
        filter: &Filter,
        stop: Stop,
    ) -> (BTreeSet<String>, Vec<(String, Verdict)>, Links) {
        let walked = walk(root, filter, None, stop);
        let mut out: BTreeSet<String> = walked.files.into_iter().collect();
        out.extend(self.paths().map(str::to_string));
        (out, walked.filtered, walked.links)
    }

    /// Compares `candidates` (relative paths) under `root` with the manifest; paths in `known`
    /// are taken from it instead of the disk. Files are read within `look.budget`: small ones
    /// first, files over [`READ_LAST`] after every other candidate, and what is not read in time
    /// is judged by its metadata (see [`crate::hashing`]).
    pub fn diff(
        &self,
        root: &Path,
        candidates: &BTreeSet<String>,
        filter: &Filter,
        known: &(impl Ahead + ?Sized),
        look: Look,
    ) -> Diff {
        let mut diff = Diff {
            list_identical: look.list_identical,
            ..Diff::default()
        };
        let now_ns = now_ns();
        let mut big = Vec::new();
        for rel in candidates {
            let old = self.get(rel);
            let verdict = filter.verdict(rel);
            if !verdict.is_keep() {
                if old.is_some() {
                    // The rules changed: forget the file without purging it.
                    diff.updates.push((rel.clone(), None));
                }
                diff.skipped.push((rel.clone(), Skip::Filtered(verdict)));
                continue;
            }
            let abs = root.join(rel);
            // What was learnt ahead counts only while the disk still says the same: a file
            // hashed as gone may have been written back since (a deploy that empties the tree and
            // fills it again, in directories re-made faster than their watches), and a file
            // hashed ahead may have been written again without an event reaching us.
            match known.known(rel) {
                Known::File(new) if still_true(&abs, Some(&new)) => {
                    diff.compare(rel, old, new);
                    continue;
                }
                Known::Gone if still_true(&abs, None) => {
                    diff.gone(rel, old);
                    continue;
                }
                _ => {}
            }
            if let Some(old) = old
                && look.trust == Trust::Metadata
            {
                match std::fs::metadata(&abs) {
                    Ok(m) if m.is_file() => {
                        let mtime_ns = mtime_ns(&m);
                        if old.size == m.len()
                            && old.mtime_ns == mtime_ns
                            && now_ns.saturating_sub(mtime_ns) > RACY_WINDOW.as_nanos() as i64
                        {
                            continue;
                        }
                    }
                    Ok(_) | Err(_) => {
                        diff.gone(rel, Some(old));
                        continue;
                    }
                }
            }
            match hash_within(&abs, look.budget, Some(READ_LAST)) {
                Err(e) if Late::of(&e).is_some_and(|l| l.size > READ_LAST) => big.push(rel),
                read => diff.read(rel, old, read, now_ns),
            }
        }
        for rel in big {
            let read = hash_within(&root.join(rel), look.budget, None);
            diff.read(rel, self.get(rel), read, now_ns);
        }
        diff
    }
}

/// Whether the disk still agrees with what a hash taken ahead found at `abs`: no regular file
/// there (`None`), or a regular file of the same size and mtime.
pub fn still_true(abs: &Path, known: Option<&FileMeta>) -> bool {
    match (std::fs::metadata(abs), known) {
        (Ok(m), None) => !m.is_file(),
        (Err(_), None) => true,
        (Ok(m), Some(k)) => m.is_file() && m.len() == k.size && mtime_ns(&m) == k.mtime_ns,
        (Err(_), Some(_)) => false,
    }
}

impl Diff {
    /// What reading `rel` found.
    fn read(&mut self, rel: &str, old: Option<&FileMeta>, read: io::Result<Option<FileMeta>>, now_ns: i64) {
        match read {
            Ok(Some(new)) => {
                self.hashed += 1;
                self.compare(rel, old, new);
            }
            Ok(None) => self.gone(rel, old),
            // A directory where a file was: the file is gone (its files are candidates too).
            Err(e) if e.kind() == io::ErrorKind::IsADirectory => self.gone(rel, old),
            Err(e) => match Late::of(&e) {
                Some(late) => self.late(rel, old, late, now_ns),
                None if passing(&e) => self.skipped.push((rel.to_string(), Skip::NotYet(e.to_string()))),
                None => self.skipped.push((rel.to_string(), Skip::Unreadable(e.to_string()))),
            },
        }
    }

    /// `rel` was not read in time: judged by its metadata. New, or not the size and mtime
    /// recorded: purged now, recorded [`UNHASHED`]. The recorded size and mtime: unchanged,
    /// unless that mtime is recent enough for a rewrite to have kept it (then read next batch).
    fn late(&mut self, rel: &str, old: Option<&FileMeta>, late: Late, now_ns: i64) {
        match old {
            Some(o) if o.size == late.size && o.mtime_ns == late.mtime_ns => {
                if now_ns.saturating_sub(late.mtime_ns) <= RACY_WINDOW.as_nanos() as i64 {
                    self.skipped.push((rel.to_string(), Skip::Late));
                }
            }
            _ => {
                self.unhashed += 1;
                self.changes.push(Change {
                    path: rel.to_string(),
                    kind: if old.is_some() {
                        ChangeKind::Modified
                    } else {
                        ChangeKind::Created
                    },
                });
                self.updates.push((rel.to_string(), Some(late.unhashed())));
            }
        }
    }

    /// `rel` is not a regular file any more: a deletion if it was recorded.
    fn gone(&mut self, rel: &str, old: Option<&FileMeta>) {
        if old.is_some() {
            self.changes.push(Change {
                path: rel.to_string(),
                kind: ChangeKind::Deleted,
            });
            self.updates.push((rel.to_string(), None));
        }
    }

    fn compare(&mut self, rel: &str, old: Option<&FileMeta>, new: FileMeta) {
        match old {
            Some(o) if o.same_bytes(&new) => {
                if *o != new {
                    self.refreshed.push((rel.to_string(), Some(new)));
                }
                self.identical += 1;
                if self.list_identical {
                    self.skipped.push((rel.to_string(), Skip::Identical));
                }
            }
            Some(_) => {
                self.changes.push(Change {
                    path: rel.to_string(),
                    kind: ChangeKind::Modified,
                });
                self.updates.push((rel.to_string(), Some(new)));
            }
            None => {
                self.changes.push(Change {
                    path: rel.to_string(),
                    kind: ChangeKind::Created,
                });
                self.updates.push((rel.to_string(), Some(new)));
            }
        }
    }
}

#[cfg(test)]
mod tests;

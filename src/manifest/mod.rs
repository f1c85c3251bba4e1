//! What a rule's tree looked like when it was last purged: the record and its first baseline.
//! What differs now is [`crate::compare`]'s.
//!
//! A [`Manifest`] maps each kept file (relative path) to its size, mtime and BLAKE3 hash. Events
//! only say *where* to look; a file is purged when its bytes differ from the manifest, so a `touch`
//! or an identical rewrite by a site generator sends nothing, while a deletion or a rename is
//! always purged (the old URL changed too).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

mod table;

/// A file as recorded: its size, mtime and digest (what [`crate::hashing`] reads).
pub use crate::hashing::FileMeta;
use crate::links::Links;
use crate::route::Filter;
use crate::shutdown::Stop;
use crate::walk::walk;

#[derive(Clone, Default)]
pub struct Manifest {
    /// Each kept file's metadata, in one compact sorted table (see [`table`]).
    files: table::Table,
    /// The tree's directory symlinks, as its last whole walk (and the walks of new directories
    /// since) found them: not stored, found again by the walk every start makes.
    links: Links,
}

impl PartialEq for Manifest {
    fn eq(&self, other: &Manifest) -> bool {
        self.len() == other.len() && self.links == other.links && self.iter().eq(other.iter())
    }
}

impl std::fmt::Debug for Manifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manifest")
            .field("files", &DebugFiles(self))
            .field("links", &self.links)
            .finish()
    }
}

struct DebugFiles<'a>(&'a Manifest);

impl std::fmt::Debug for DebugFiles<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.0.iter()).finish()
    }
}

impl Manifest {
    pub fn from_entries(entries: impl IntoIterator<Item = (String, FileMeta)>) -> Manifest {
        Manifest {
            files: table::Table::from_entries(entries),
            links: Links::default(),
        }
    }

    /// How many directories hold the recorded files (the root included).
    pub fn directories(&self) -> usize {
        let mut dirs: std::collections::HashSet<&str> = std::collections::HashSet::new();
        dirs.insert("");
        for path in self.paths() {
            let mut p = path;
            while let Some(i) = p.rfind('/') {
                p = &p[..i];
                if !dirs.insert(p) {
                    break;
                }
            }
        }
        dirs.len()
    }

    /// The tree's directory symlinks (see [`crate::links`]).
    pub fn links(&self) -> &Links {
        &self.links
    }

    pub fn set_links(&mut self, links: Links) {
        self.links = links;
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.len() == 0
    }

    pub fn get(&self, path: &str) -> Option<&FileMeta> {
        self.files.get(path)
    }

    /// Every recorded path, in order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.files.iter().map(|(p, _)| p)
    }

    /// Every recorded path with its metadata, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &FileMeta)> {
        self.files.iter()
    }

    /// Recorded paths below directory `dir` (not `dir` itself).
    pub fn under<'a>(&'a self, dir: &str) -> impl Iterator<Item = &'a str> + 'a {
        let prefix = format!("{dir}/");
        self.files
            .iter_from(&prefix)
            .map(|(k, _)| k)
            .take_while(move |k| k.starts_with(&prefix))
    }

    /// Records `meta` for `path`.
    pub fn set(&mut self, path: &str, meta: FileMeta) {
        self.files.set(path, meta);
    }

    pub fn apply(&mut self, updates: &[(String, Option<FileMeta>)]) {
        for (path, meta) in updates {
            match meta {
                Some(m) => self.files.set(path, *m),
                None => self.files.remove(path),
            }
        }
    }

    /// Takes the tree under `root` as it is now (a first start): every kept regular file that
    /// can be read, read on every core.
    /// `None` when the walk was cut short by a stop (a partial baseline would make every file
    /// it missed look new at the next start).
    pub fn baseline(root: &Path, filter: &Filter, stop: Stop) -> Option<Manifest> {
        let mut walked = walk(root, filter, None, stop);
        if !walked.complete {
            return None;
        }
        let files = std::mem::take(&mut walked.files);
        let entries = crate::hashing::hash_all(root, files, stop)?;
        Some(Manifest {
            files: table::Table::from_entries(entries),
            links: walked.links,
        })
    }

    /// How many recorded files are below `dir` (`""`: all), counting at most `limit`.
    pub fn count_under(&self, dir: &str, limit: usize) -> usize {
        if dir.is_empty() {
            self.files.len()
        } else {
            self.under(dir).take(limit).count()
        }
    }
}

/// The directories that contain `path`, from the root (`""`) down.
pub fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    std::iter::once("").chain(path.match_indices('/').map(move |(i, _)| &path[..i]))
}

pub(crate) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_under_directories_and_ancestors() {
        assert_eq!(ancestors("a/b/c.html").collect::<Vec<_>>(), vec!["", "a", "a/b"]);
        let meta = FileMeta {
            size: 0,
            mtime_ns: 0,
            hash: [0; 16],
        };
        let m = Manifest::from_entries(["a/x", "a/b/y", "z"].map(|p| (p.to_string(), meta)));
        assert_eq!(m.count_under("", usize::MAX), 3);
        assert_eq!(m.count_under("a", usize::MAX), 2);
        assert_eq!(m.count_under("a", 1), 1);
        assert_eq!(m.count_under("a/b", usize::MAX), 1);
        assert_eq!(m.under("a").count(), 2);
    }
}

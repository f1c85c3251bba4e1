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
    use crate::compare::diff::{Change, Look, NothingAhead, READ_LAST, Skip, Trust};
    use crate::config::Rule;
    use crate::hashing::{Budget, UNHASHED};
    use crate::request::ChangeKind;
    use std::collections::BTreeSet;
    use std::fs;
    use std::time::Duration;

    /// A directory whose only events changed its attributes (rsync setting its mtime) is not
    /// walked; one with any other event (made, moved in) is, for files made before its watch.
    #[test]
    fn only_directories_with_more_than_attribute_events_are_walked() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir_all(root.join("d")).unwrap();
        fs::write(root.join("d/unseen.html"), "x").unwrap();
        let m = Manifest::default();
        let mut c = crate::hashahead::Record::default();
        c.event("d", 1, true);
        let got = m.expand(
            root,
            ["d"],
            &filter(&[]),
            &c.known(&m),
            &mut Links::default(),
            Stop::NEVER,
        );
        assert!(got.is_empty(), "{got:?}");
        c.event("d", 2, false);
        let got = m.expand(
            root,
            ["d"],
            &filter(&[]),
            &c.known(&m),
            &mut Links::default(),
            Stop::NEVER,
        );
        assert_eq!(got.into_iter().collect::<Vec<_>>(), vec!["d/unseen.html".to_string()]);
    }

    fn filter(exclude: &[&str]) -> Filter {
        let g = |s: &&str| globset::GlobBuilder::new(s).literal_separator(true).build().unwrap();
        Rule::filter(&Rule {
            exclude: exclude.iter().map(g).collect(),
            index_files: vec![],
            ..Rule::new("r", "/")
        })
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn identical_rewrite_is_not_a_change_but_an_edit_is() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("blog")).unwrap();
        fs::write(root.join("a.html"), "a").unwrap();
        fs::write(root.join("blog/b.html"), "b").unwrap();
        fs::write(root.join(".hidden"), "h").unwrap();
        let f = filter(&["**/.*"]);
        let mut m = Manifest::baseline(root, &f, Stop::NEVER).unwrap();
        assert_eq!(m.len(), 2);

        fs::write(root.join("a.html"), "a").unwrap(); // identical rewrite
        fs::write(root.join("blog/b.html"), "B").unwrap(); // real edit
        fs::write(root.join("blog/c.html"), "c").unwrap(); // new
        let d = m.diff(
            root,
            &set(&["a.html", "blog/b.html", "blog/c.html", ".hidden"]),
            &f,
            &NothingAhead,
            Look::new(Trust::Content, true),
        );
        assert_eq!(
            d.changes,
            vec![
                Change {
                    path: "blog/b.html".into(),
                    kind: ChangeKind::Modified
                },
                Change {
                    path: "blog/c.html".into(),
                    kind: ChangeKind::Created
                },
            ]
        );
        assert!(d.skipped.contains(&("a.html".into(), Skip::Identical)));
        assert_eq!(d.identical, 1);
        assert!(
            d.skipped
                .iter()
                .any(|(p, s)| p == ".hidden" && matches!(s, Skip::Filtered(_)))
        );
        m.apply(&d.updates);

        fs::remove_dir_all(root.join("blog")).unwrap();
        let cands = m.expand(
            root,
            set(&["blog"]).iter().map(String::as_str),
            &f,
            &NothingAhead,
            &mut Links::default(),
            Stop::NEVER,
        );
        assert_eq!(cands, set(&["blog", "blog/b.html", "blog/c.html"]));
        let d = m.diff(root, &cands, &f, &NothingAhead, Look::new(Trust::Content, false));
        assert_eq!(d.changes.len(), 2);
        assert!(d.skipped.is_empty());
        assert!(d.changes.iter().all(|c| c.kind == ChangeKind::Deleted));
    }

    #[test]
    fn identical_rewrites_are_counted_and_listed_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join("a.html"), "a").unwrap();
        let f = filter(&[]);
        let m = Manifest::baseline(root, &f, Stop::NEVER).unwrap();
        // Same bytes with a new mtime: no change, new metadata for later.
        let later = SystemTime::now() + Duration::from_secs(5);
        fs::File::options()
            .write(true)
            .open(root.join("a.html"))
            .unwrap()
            .set_modified(later)
            .unwrap();
        let d = m.diff(
            root,
            &set(&["a.html"]),
            &f,
            &NothingAhead,
            Look::new(Trust::Content, false),
        );
        assert!(d.changes.is_empty() && d.updates.is_empty() && d.skipped.is_empty());
        assert_eq!(d.identical, 1);
        assert_eq!(d.refreshed.len(), 1);
        assert_eq!(d.refreshed[0].0, "a.html");
    }

    /// Past the batch's budget, a file not read (a big one, read last) is purged by its
    /// metadata and recorded unhashed; small files are still read. A later comparison that
    /// finds the size and mtime recorded takes it as the file that was purged: no second purge,
    /// its hash filled in.
    #[test]
    fn a_file_not_read_in_time_is_purged_by_its_metadata_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join("a.html"), "a").unwrap();
        let f = filter(&[]);
        let m = Manifest::baseline(root, &f, Stop::NEVER).unwrap();
        fs::write(root.join("a.html"), "a2").unwrap();
        fs::File::create(root.join("big.bin"))
            .unwrap()
            .set_len(READ_LAST + (64 << 20))
            .unwrap();
        let spent = Look {
            budget: Budget::until(std::time::Instant::now()),
            ..Look::new(Trust::Content, false)
        };
        let d = m.diff(root, &set(&["a.html", "big.bin"]), &f, &NothingAhead, spent);
        assert_eq!((d.hashed, d.unhashed), (1, 1));
        let mut kinds: Vec<_> = d.changes.iter().map(|c| (c.path.as_str(), c.kind)).collect();
        kinds.sort();
        assert_eq!(
            kinds,
            [("a.html", ChangeKind::Modified), ("big.bin", ChangeKind::Created)]
        );
        let mut m = m;
        m.apply(&d.updates);
        let big = *m.get("big.bin").unwrap();
        assert_eq!(big.hash, UNHASHED);
        assert_eq!(big.size, READ_LAST + (64 << 20));
        // Still not read in time, same metadata, written just now: read at the next batch.
        let d = m.diff(root, &set(&["big.bin"]), &f, &NothingAhead, spent);
        assert!(d.changes.is_empty());
        assert_eq!(d.skipped, [("big.bin".to_string(), Skip::Late)]);
        // Read at last: the same size and mtime stand for the bytes that were purged.
        let d = m.diff(
            root,
            &set(&["big.bin"]),
            &f,
            &NothingAhead,
            Look::new(Trust::Content, false),
        );
        assert!(d.changes.is_empty(), "{:?}", d.changes);
        assert_eq!(d.identical, 1);
        assert_eq!(d.refreshed.len(), 1);
        assert_ne!(d.refreshed[0].1.unwrap().hash, UNHASHED);
        // A new mtime after an unhashed record is a change.
        let f2 = fs::File::options().write(true).open(root.join("big.bin")).unwrap();
        f2.set_modified(SystemTime::now() + Duration::from_secs(5)).unwrap();
        let d = m.diff(
            root,
            &set(&["big.bin"]),
            &f,
            &NothingAhead,
            Look::new(Trust::Content, false),
        );
        assert_eq!(d.changes.len(), 1);
    }

    #[test]
    fn new_directory_expands_to_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let f = filter(&[]);
        let m = Manifest::baseline(root, &f, Stop::NEVER).unwrap();
        fs::create_dir_all(root.join("a/b/c")).unwrap();
        fs::write(root.join("a/b/c/x.html"), "x").unwrap();
        fs::write(root.join("a/y.html"), "y").unwrap();
        assert_eq!(
            m.expand(
                root,
                set(&["a"]).iter().map(String::as_str),
                &f,
                &NothingAhead,
                &mut Links::default(),
                Stop::NEVER
            ),
            set(&["a/b/c/x.html", "a/y.html"])
        );
    }

    #[test]
    fn metadata_trust_skips_old_unchanged_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join("a.html"), "a").unwrap();
        let old = SystemTime::now() - Duration::from_secs(3600);
        fs::File::options()
            .write(true)
            .open(root.join("a.html"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let f = filter(&[]);
        let m = Manifest::baseline(root, &f, Stop::NEVER).unwrap();
        let d = m.diff(
            root,
            &set(&["a.html"]),
            &f,
            &NothingAhead,
            Look::new(Trust::Metadata, false),
        );
        assert_eq!(d.hashed, 0);
        assert!(d.changes.is_empty());
    }

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

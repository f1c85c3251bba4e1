//! The comparison's own steps: which paths to look at (`expand`), and each one's verdict
//! (`diff`), on real files.

use super::*;
use crate::config::Rule;
use crate::hashing::{Budget, UNHASHED};
use crate::links::Links;
use crate::request::ChangeKind;
use crate::shutdown::Stop;
use std::collections::BTreeSet;
use std::fs;
use std::time::{Duration, SystemTime};

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

//! What happened under one rule's tree since its last comparison: one record per path.
//!
//! Every event takes a sequence number. A path with an event is *dirty* (it must be compared at
//! the next batch). A hash taken ahead by the worker ([`super::worker`]) is kept with the
//! sequence number it was queued at, and counts only while no later event came for the path.
//! Results queued before the last comparison are stale and dropped.
//!
//! A hash that matches the manifest (an identical rewrite, the common case in a deploy storm) is
//! kept as one flag: the caller has already moved the manifest's size and mtime forward. Only
//! files whose bytes differ keep their new metadata here. So a storm over 100,000 files costs one
//! small entry per file. A whole tree hashed after a swap costs less: its files that hold the
//! manifest's bytes and had no event get no entry at all, only a 16-byte mark ([`Marks`]).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};

use super::{Ahead, Known};
use crate::manifest::{FileMeta, Manifest};

/// What a hash taken ahead found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Found {
    #[default]
    Nothing,
    /// Not a regular file any more.
    Gone,
    /// The same bytes as the manifest's entry (whose metadata the caller brought up to date).
    Same,
    /// Different bytes, or a new file: its metadata is in [`Record::metas`].
    Differs,
}

#[derive(Debug, Default)]
struct PathState {
    /// The sequence number of its last event (0: none since the last comparison).
    seq: u64,
    /// What a hash queued at or after `seq` found (an event resets it: the hash is stale).
    found: Found,
    /// An event came for the path since the last comparison.
    dirty: bool,
    /// An event other than an attribute change came (or the path was marked dirty without
    /// events): a directory must be walked for files no event named (made before its watch).
    walk: bool,
}

impl PathState {
    fn is_same(&self) -> bool {
        self.found == Found::Same
    }
}

/// Trees with at least this many files get a record sized for all of them (see
/// [`Record::with_room`]).
pub(super) const ROOM_FROM: usize = 16_384;

#[derive(Debug, Default)]
pub(crate) struct Record {
    paths: HashMap<Box<str>, PathState>,
    /// New metadata of files found to differ from the manifest.
    metas: HashMap<Box<str>, FileMeta>,
    /// Files of the tree being hashed found to hold the manifest's bytes, without a record.
    listed_same: usize,
    dirty: usize,
    /// Results queued at or before this were overtaken by a comparison (or by a new tree
    /// swapped in under the paths).
    settled_seq: u64,
    /// The files of the newest whole-tree hash found to hold the manifest's bytes (and without
    /// a record of their own).
    marks: Marks,
    /// The sequence number of the newest whole-tree listing (and hash) recorded here.
    tree_seq: Option<u64>,
}

/// What a finished hash means against the manifest: [`Found::Same`] (and the new metadata to
/// record for the same bytes, if it moved), [`Found::Differs`] or [`Found::Gone`].
pub(crate) fn judge(manifest: &Manifest, rel: &str, result: Option<FileMeta>) -> (Found, Option<FileMeta>) {
    match (result, manifest.get(rel)) {
        (None, _) => (Found::Gone, None),
        (Some(new), Some(old)) if old.same_bytes(&new) => (Found::Same, (new != *old).then_some(new)),
        (Some(new), _) => (Found::Differs, Some(new)),
    }
}

impl Record {
    /// An event for `rel` with sequence number `seq`. Returns true if the path was not dirty yet.
    /// `attrib`: the event changed attributes only.
    pub(crate) fn event(&mut self, rel: &str, seq: u64, attrib: bool) -> bool {
        let state = match self.paths.get_mut(rel) {
            Some(s) => s,
            None => self.paths.entry(rel.into()).or_default(),
        };
        state.walk |= !attrib;
        state.seq = seq;
        state.found = Found::Nothing;
        let new = !state.dirty;
        state.dirty = true;
        self.dirty += new as usize;
        new
    }

    /// Marks paths dirty without an event (seen in the last run, not compared yet).
    pub(crate) fn mark_dirty(&mut self, paths: impl IntoIterator<Item = String>) {
        for p in paths {
            let state = self.paths.entry(p.into_boxed_str()).or_default();
            self.dirty += !state.dirty as usize;
            state.dirty = true;
            state.walk = true;
        }
    }

    pub(crate) fn is_dirty(&self, rel: &str) -> bool {
        self.paths.get(rel).is_some_and(|s| s.dirty)
    }

    /// How many paths have a record (dirty, or hashed as part of a tree), counting the tree's
    /// files kept as a mark on the manifest.
    pub(crate) fn recorded(&self) -> usize {
        self.paths.len() + self.listed_same
    }

    pub(crate) fn has_dirty(&self) -> bool {
        self.dirty > 0
    }

    /// How many paths are dirty (changed since the last comparison).
    pub(crate) fn dirty_count(&self) -> usize {
        self.dirty
    }

    /// Every path recorded (dirty ones and those of a tree hashed ahead) that still needs a
    /// comparison: all but those found to hold the manifest's bytes.
    pub(crate) fn paths_to_compare(&self) -> impl Iterator<Item = &str> {
        self.paths.iter().filter(|(_, s)| !s.is_same()).map(|(p, _)| &**p)
    }

    /// The dirty paths that still need a comparison (see [`Record::paths_to_compare`]).
    pub(crate) fn dirty_to_compare(&self) -> impl Iterator<Item = &str> {
        self.paths
            .iter()
            .filter(|(_, s)| s.dirty && !s.is_same())
            .map(|(p, _)| &**p)
    }

    /// Whether `rel` was hashed ahead, found to hold the manifest's bytes, and has had no event
    /// since: nothing to compare. (The daemon asks through [`Record::paths_to_compare`].)
    #[cfg(test)]
    pub(crate) fn is_same(&self, rel: &str) -> bool {
        self.paths.get(rel).is_some_and(PathState::is_same)
    }

    /// The whole tree, listed by a job queued at `seq`, has been recorded (with [`Record::found_in_tree`]
    /// for each of its files): with the events since, it stands in for walking the tree (see
    /// [`Record::tree_covers`] and [`Record::tree_lacks`]).
    pub(crate) fn tree_listed(&mut self, seq: u64) {
        if self.wants_tree(seq) && self.tree_seq < Some(seq) {
            self.tree_seq = Some(seq);
        }
    }

    /// The paths of `manifest` the tree last listed lacks (files gone with a swap): neither
    /// marked by that tree's hash nor recorded here. With [`Record::paths_to_compare`] they are
    /// every path a comparison must look at. (A path the manifest gains comes from a comparison,
    /// which starts a new record; one recorded after the listing is compared through its
    /// record.) Read by the comparison, off the daemon's loop: a walk of the whole manifest.
    pub(crate) fn tree_lacks<'a>(&'a self, manifest: &'a Manifest) -> impl Iterator<Item = &'a str> + 'a {
        let seq = self.tree_seq;
        manifest
            .paths()
            .filter(move |p| seq.is_some_and(|seq| !self.marks.has(p, seq)) && !self.paths.contains_key(*p))
    }

    /// Whether a tree listed here was taken after `seq` (so that, with the events since, it
    /// stands in for walking the tree).
    pub(crate) fn tree_covers(&self, seq: u64) -> bool {
        self.tree_seq.is_some_and(|t| t > seq)
    }

    /// Whether a file's hash queued at `seq` is still worth keeping: its job was queued after
    /// the last comparison and no event came for the path since.
    pub(crate) fn wants(&self, rel: &str, seq: u64) -> bool {
        seq > self.settled_seq && self.paths.get(rel).is_some_and(|s| s.seq == seq)
    }

    /// Whether a whole tree hashed from a job queued at `seq` is still worth keeping (per path,
    /// [`Record::found`] also skips paths with later events).
    pub(crate) fn wants_tree(&self, seq: u64) -> bool {
        seq > self.settled_seq
    }

    /// Records what the hash of `rel`, queued at `seq`, found (see [`judge`]); `meta` is the new
    /// metadata when it differs. Ignored if an event came for the path after `seq`.
    pub(crate) fn found(&mut self, rel: String, seq: u64, found: Found, meta: Option<FileMeta>) {
        if seq <= self.settled_seq {
            return;
        }
        if self.paths.get(rel.as_str()).is_some_and(|s| s.seq > seq) {
            return;
        }
        let rel = rel.into_boxed_str();
        match (found, meta) {
            (Found::Differs, Some(m)) => {
                self.metas.insert(rel.clone(), m);
            }
            _ => {
                self.metas.remove(&rel);
            }
        }
        self.paths.entry(rel).or_default().found = found;
    }

    /// Records what the hash of `rel` found as part of the whole tree hashed by job `seq` (see
    /// [`Record::found`]). A file with the manifest's bytes and no record here gets no record:
    /// it is marked instead ([`Marks`]), which [`Record::tree_listed`] and [`Record::known`] read.
    pub(crate) fn found_in_tree(
        &mut self,
        manifest: &Manifest,
        rel: String,
        seq: u64,
        found: Found,
        meta: Option<FileMeta>,
    ) {
        if !self.wants_tree(seq) {
            return;
        }
        if found == Found::Same {
            match self.paths.get(rel.as_str()) {
                Some(s) if s.seq > seq => return,
                Some(_) => {}
                None => {
                    if manifest.get(&rel).is_some() && self.marks.mark(&rel, seq) {
                        self.listed_same += 1;
                    }
                    return;
                }
            }
        }
        self.found(rel, seq, found, meta);
    }

    /// A new tree was swapped in under the watched path at `seq`: what any hash taken before
    /// found (in the old tree) no longer holds, though every recorded path stays dirty.
    pub(crate) fn root_replaced(&mut self, seq: u64) {
        self.settled_seq = self.settled_seq.max(seq);
        for s in self.paths.values_mut() {
            s.found = Found::Nothing;
        }
        self.metas.clear();
        // The listing was of the tree replaced: it stands in for nothing now.
        self.tree_seq = None;
        self.marks = Marks::default();
    }

    /// An empty record with room for `paths` paths (the size of the rule's tree): a storm over
    /// the whole tree then never makes its table grow. Growing it on the loop moved every entry
    /// at once: 17-39 ms for the step from 57,344 to 114,688 paths. The room is address space
    /// until it is used (a table's control bytes, 1 byte per slot, are written at once; a
    /// 100,000-file tree's table is 4 MB). The metadata of files found to differ gets room for
    /// one file in 16: entries land all over a table, so a bigger one would be paged in by a
    /// small storm. A tree under [`ROOM_FROM`] files gets no room: its table grows in well under
    /// a millisecond, and a host's thousand small trees would otherwise each hold a table the
    /// size of its tree (a first start, whose freed memory the tables reuse, kept ~60 MB more
    /// at 1,000 trees of 1,000 files).
    pub(crate) fn with_room(paths: usize) -> Record {
        if paths < ROOM_FROM {
            return Record::default();
        }
        Record {
            paths: HashMap::with_capacity(paths),
            metas: HashMap::with_capacity(paths / 16),
            ..Record::default()
        }
    }

    /// Forgets everything after a comparison that saw all events up to `seq`, and makes room
    /// for `room` paths (see [`Record::with_room`]).
    /// Returns the record it replaces, for the caller to drop once the purge is on its way
    /// (after a storm, freeing 100,000 entries takes a while).
    pub(crate) fn settled(&mut self, seq: u64, room: usize) -> Record {
        std::mem::replace(
            self,
            Record {
                settled_seq: seq,
                ..Record::with_room(room)
            },
        )
    }

    /// What is known ahead, read together with the manifest (for [`Found::Same`]).
    pub(crate) fn known<'a>(&'a self, manifest: &'a Manifest) -> View<'a> {
        View { record: self, manifest }
    }
}

/// A [`Record`] and the manifest it was judged against: what a comparison knows ahead.
pub(crate) struct View<'a> {
    record: &'a Record,
    manifest: &'a Manifest,
}

impl Ahead for View<'_> {
    fn needs_walk(&self, rel: &str) -> bool {
        self.record.paths.get(rel).is_none_or(|s| s.walk)
    }

    fn known(&self, rel: &str) -> Known {
        let r = self.record;
        let from_manifest = || self.manifest.get(rel).map_or(Known::Unknown, |m| Known::File(*m));
        let Some(state) = r.paths.get(rel) else {
            // Marked by the newest tree hash (queued after the last comparison), no event since.
            return if r.marks.seq > r.settled_seq && r.marks.has(rel, r.marks.seq) {
                from_manifest()
            } else {
                Known::Unknown
            };
        };
        match state.found {
            Found::Nothing => Known::Unknown,
            Found::Gone => Known::Gone,
            Found::Same => from_manifest(),
            Found::Differs => r.metas.get(rel).map_or(Known::Unknown, |m| Known::File(*m)),
        }
    }
}

/// The files a whole-tree hash (after a swap) found holding the manifest's bytes, kept as
/// 128-bit fingerprints of their paths (from two independently, randomly keyed SipHash
/// hashers): 100,000 files cost ~2 MB while the tree is recorded, and nothing once it is
/// compared. Two paths share a fingerprint with a probability of about n²/2¹²⁹ (10⁻²⁹ for
/// 100,000 files).
#[derive(Debug, Default)]
struct Marks {
    /// The job whose marks these are (only the newest tree's count).
    seq: u64,
    set: HashSet<u128>,
    keys: Option<(RandomState, RandomState)>,
}

impl Marks {
    fn fingerprint(keys: &(RandomState, RandomState), rel: &str) -> u128 {
        ((keys.0.hash_one(rel) as u128) << 64) | keys.1.hash_one(rel) as u128
    }

    /// Marks `rel` as found by the tree hash of job `seq`: a newer job's marks replace older
    /// ones, an older job's are ignored. Returns whether a mark was added.
    fn mark(&mut self, rel: &str, seq: u64) -> bool {
        if seq < self.seq {
            return false;
        }
        if seq > self.seq {
            self.seq = seq;
            self.set.clear();
        }
        let keys = self
            .keys
            .get_or_insert_with(|| (RandomState::new(), RandomState::new()));
        let fp = Marks::fingerprint(keys, rel);
        self.set.insert(fp)
    }

    /// Whether the tree hash of job `seq` marked `rel`.
    fn has(&self, rel: &str, seq: u64) -> bool {
        seq == self.seq
            && self
                .keys
                .as_ref()
                .is_some_and(|k| self.set.contains(&Marks::fingerprint(k, rel)))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn a_record_with_room_for_the_tree_never_grows_during_a_storm_over_it() {
        let n = ROOM_FROM as u64 + 1_000;
        let mut r = Record::with_room(n as usize);
        let (paths, metas) = (r.paths.capacity(), r.metas.capacity());
        assert!(paths >= n as usize && metas >= n as usize / 16);
        for i in 0..n {
            r.event(&format!("d{}/p{i}.html", i / 100), i + 1, false);
            if i % 16 == 0 {
                r.found(format!("d{}/p{i}.html", i / 100), i + 1, Found::Differs, Some(meta(1)));
            }
        }
        assert_eq!((r.paths.capacity(), r.metas.capacity()), (paths, metas), "a table grew");
        // The next storm gets the same room.
        let spent = r.settled(n + 1, n as usize);
        assert_eq!(spent.dirty, n as usize);
        assert_eq!(r.paths.capacity(), paths);
        // A small tree gets none: its table grows as it is used.
        let small = Record::with_room(5_000);
        assert_eq!((small.paths.capacity(), small.metas.capacity()), (0, 0));
    }

    /// Metadata whose every field (and hash byte) is `n`.
    pub(in crate::hashahead) fn meta(n: u8) -> FileMeta {
        FileMeta {
            size: n as u64,
            mtime_ns: n as i64,
            hash: [n; 16],
        }
    }

    /// Judges and records a hash the way the daemon does, applying new metadata for same bytes.
    fn hashed(c: &mut Record, m: &mut Manifest, rel: &str, seq: u64, result: Option<FileMeta>) {
        if c.wants(rel, seq) || (c.wants_tree(seq) && !c.is_dirty(rel)) {
            let (found, meta) = judge(m, rel, result);
            if found == Found::Same
                && let Some(new) = meta
            {
                m.apply(&[(rel.to_string(), Some(new))]);
            }
            c.found(rel.to_string(), seq, found, meta);
        }
    }

    #[test]
    fn a_hash_counts_only_while_no_later_event_came() {
        let mut m = Manifest::default();
        let mut c = Record::default();
        assert!(c.event("a", 1, false));
        assert!(!c.event("a", 2, false));
        assert!(!c.wants("a", 1)); // overtaken by event 2
        hashed(&mut c, &mut m, "a", 2, Some(meta(2)));
        assert_eq!(c.known(&m).known("a"), Known::File(meta(2)));
        c.event("a", 3, false);
        assert_eq!(c.known(&m).known("a"), Known::Unknown);
        assert!(!c.wants("b", 4)); // no event for b
        assert!(c.is_dirty("a") && !c.is_dirty("b"));
        assert_eq!(c.dirty_to_compare().count(), 1);
    }

    #[test]
    fn same_bytes_are_a_flag_read_from_the_manifest_and_gone_files_are_known_gone() {
        let mut m = Manifest::from_entries([("a".to_string(), meta(1)), ("b".to_string(), meta(2))]);
        let mut c = Record::default();
        c.event("a", 1, false);
        c.event("b", 2, false);
        // a: same bytes, new mtime; the manifest moves forward and nothing is kept here.
        let newer = FileMeta {
            mtime_ns: 99,
            ..meta(1)
        };
        hashed(&mut c, &mut m, "a", 1, Some(newer));
        assert_eq!(m.get("a"), Some(&newer));
        assert!(c.metas.is_empty());
        assert_eq!(c.known(&m).known("a"), Known::File(newer));
        hashed(&mut c, &mut m, "b", 2, None);
        assert_eq!(c.known(&m).known("b"), Known::Gone);
        // Only b needs comparing; a is known to hold the manifest's bytes until its next event.
        assert!(c.is_same("a") && !c.is_same("b"));
        assert_eq!(c.dirty_to_compare().collect::<Vec<_>>(), vec!["b"]);
        c.event("a", 3, false);
        assert!(!c.is_same("a"));
        assert_eq!(c.dirty_to_compare().count(), 2);
        assert_eq!(
            m.get("b"),
            Some(&meta(2)),
            "a gone file stays in the manifest until the comparison"
        );
    }

    #[test]
    fn a_tree_hash_covers_paths_without_later_events_and_stale_results_are_dropped() {
        let mut m = Manifest::default();
        let mut c = Record::default();
        c.event("x", 5, false);
        c.event("y", 7, false);
        for (rel, n) in [("x", 1), ("y", 2), ("z", 3)] {
            in_tree(&mut c, &mut m, rel, 6, n);
        }
        assert_eq!(c.known(&m).known("x"), Known::File(meta(1)));
        assert_eq!(c.known(&m).known("y"), Known::Unknown); // changed after the tree was queued
        assert_eq!(c.known(&m).known("z"), Known::File(meta(3)));
        assert!(!c.is_dirty("z"));

        assert!(!c.tree_covers(6));
        c.tree_listed(6);
        assert!(c.tree_covers(5) && !c.tree_covers(6));
        assert_eq!(c.paths_to_compare().count(), 3); // nothing was in the manifest
        assert_eq!(c.recorded(), 3);

        c.settled(7, 0);
        assert!(!c.has_dirty());
        assert!(!c.tree_covers(0));
        assert_eq!(c.known(&m).known("x"), Known::Unknown);
        c.event("x", 8, false);
        assert!(!c.wants("x", 6)); // queued before the comparison
        assert!(!c.wants_tree(7));
        c.found("q".into(), 7, Found::Differs, Some(meta(1)));
        assert_eq!(c.known(&m).known("q"), Known::Unknown);
        m = Manifest::default();
        assert_eq!(c.known(&m).known("x"), Known::Unknown);
    }

    #[test]
    fn a_listed_tree_notes_the_manifest_paths_it_lacks() {
        let m = manifest_of(&[("kept", 1), ("changed", 2), ("gone", 3), ("gone/too", 4)]);
        let mut c = Record::default();
        for (rel, n) in [("kept", 1), ("changed", 9), ("new", 5)] {
            let (found, meta) = judge(&m, rel, Some(meta(n)));
            c.found(rel.to_string(), 4, found, meta);
        }
        c.tree_listed(4);
        assert_eq!(lacks(&c, &m), ["gone", "gone/too"]);
        let mut compare: Vec<&str> = c.paths_to_compare().collect();
        compare.sort();
        assert_eq!(compare, ["changed", "new"]);
        // An older listing arriving late changes nothing; the comparison forgets the list.
        c.tree_listed(3);
        assert_eq!(lacks(&c, &m).len(), 2);
        let spent = c.settled(5, 0);
        assert_eq!(lacks(&spent, &m).len(), 2);
        assert!(lacks(&c, &m).is_empty() && !c.tree_covers(0));
    }

    /// What the tree last listed lacks of `m`.
    fn lacks<'a>(c: &'a Record, m: &'a Manifest) -> Vec<&'a str> {
        c.tree_lacks(m).collect()
    }

    /// A manifest recording `files` (path, `meta(n)`).
    fn manifest_of(files: &[(&str, u8)]) -> Manifest {
        Manifest::from_entries(files.iter().map(|&(p, n)| (p.to_string(), meta(n))))
    }

    /// Judges and records a file of a whole tree hashed by job `seq`, the way the daemon does.
    fn in_tree(c: &mut Record, m: &mut Manifest, rel: &str, seq: u64, n: u8) {
        if c.wants_tree(seq) {
            let (found, new) = judge(m, rel, Some(meta(n)));
            c.found_in_tree(m, rel.to_string(), seq, found, new);
        }
    }

    #[test]
    fn a_swapped_tree_marks_identical_files_on_the_manifest_instead_of_recording_them() {
        let mut m = manifest_of(&[("same", 1), ("evented", 2), ("changed", 3), ("gone", 4)]);
        let mut c = Record::default();
        c.event("evented", 3, false); // before the tree's job (4) was queued
        for (rel, n) in [("same", 1), ("evented", 2), ("changed", 9), ("new", 5)] {
            in_tree(&mut c, &mut m, rel, 4, n);
        }
        // Only the event's path and the files that differ have a record.
        assert_eq!(c.paths.len(), 3);
        assert_eq!(c.recorded(), 4);
        assert!(c.is_same("evented") && !c.is_same("same"));
        assert_eq!(c.known(&m).known("same"), Known::File(meta(1)));
        assert_eq!(c.known(&m).known("gone"), Known::Unknown);
        c.tree_listed(4);
        assert_eq!(lacks(&c, &m), ["gone"]);
        let mut compare: Vec<&str> = c.paths_to_compare().collect();
        compare.sort();
        assert_eq!(compare, ["changed", "new"]);
        // An event after the job: the mark no longer counts, the path is compared.
        c.event("same", 5, false);
        assert_eq!(c.known(&m).known("same"), Known::Unknown);
        assert_eq!(c.paths_to_compare().count(), 3);
        // After the comparison the marks are stale.
        c.settled(6, 0);
        assert_eq!(c.known(&m).known("evented"), Known::Unknown);
        in_tree(&mut c, &mut m, "x", 5, 1);
        assert_eq!(c.recorded(), 0, "a job queued before the comparison is dropped");
    }

    #[test]
    fn a_second_swap_overrules_what_was_found_in_the_first_tree() {
        let mut m = manifest_of(&[("a", 1), ("b", 2), ("c", 3)]);
        let mut c = Record::default();
        c.event("c", 1, false);
        // The first tree (job 3): a and c identical, b changed.
        for (rel, n) in [("a", 1), ("b", 7), ("c", 3)] {
            in_tree(&mut c, &mut m, rel, 3, n);
        }
        assert!(c.is_same("c"));
        // A second tree is swapped in at 4 before the comparison; a file hash queued before it
        // (job 2) comes back late and is dropped.
        c.root_replaced(4);
        assert!(!c.is_same("c") && c.is_dirty("c"));
        assert_eq!(
            c.known(&m).known("b"),
            Known::Unknown,
            "the first tree's b is not the second's"
        );
        c.found("c".into(), 2, Found::Same, None);
        assert!(!c.is_same("c"));
        // The second tree (job 5) has only b, unchanged.
        in_tree(&mut c, &mut m, "b", 5, 2);
        assert_eq!(c.known(&m).known("a"), Known::Unknown, "marked by the first tree only");
        assert_eq!(c.known(&m).known("b"), Known::File(meta(2)));
        c.tree_listed(5);
        assert_eq!(lacks(&c, &m), ["a"]);
        assert_eq!(c.paths_to_compare().collect::<Vec<_>>(), ["c"]);
    }

    #[test]
    fn seen_paths_are_dirty_without_an_event() {
        let mut c = Record::default();
        c.mark_dirty(["a".to_string(), "b".to_string(), "a".to_string()]);
        assert!(c.has_dirty());
        assert_eq!(c.dirty_to_compare().count(), 2);
        assert!(!c.event("a", 1, false));
    }
}

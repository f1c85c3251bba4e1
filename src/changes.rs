//! What happened under one rule's tree since its last comparison: one record per path.
//!
//! Every event takes a sequence number. A path with an event is *dirty* (it must be compared at
//! the next batch). A hash taken ahead by the worker ([`crate::prehash`]) is kept with the
//! sequence number it was queued at, and counts only while no later event came for the path.
//! Results queued before the last comparison are stale and dropped.
//!
//! One map holds all of it, so that a storm over 100,000 files costs one entry per file.

use std::collections::HashMap;

use crate::manifest::{FileMeta, Known};

#[derive(Debug, Default)]
struct PathState {
    /// An event came for the path since the last comparison.
    dirty: bool,
    /// The sequence number of its last event (0: none since the last comparison).
    seq: u64,
    /// A hash taken ahead (`None` inside: not a regular file), with the sequence number its job
    /// was queued at.
    known: Option<(u64, Option<FileMeta>)>,
}

#[derive(Debug, Default)]
pub struct Changes {
    paths: HashMap<String, PathState>,
    dirty: usize,
    /// Results queued at or before this were overtaken by a comparison.
    settled_seq: u64,
}

impl Changes {
    /// An event for `rel` with sequence number `seq`. Returns true if the path was not dirty yet.
    pub fn event(&mut self, rel: &str, seq: u64) -> bool {
        let state = match self.paths.get_mut(rel) {
            Some(s) => s,
            None => self.paths.entry(rel.to_string()).or_default(),
        };
        state.seq = seq;
        let new = !state.dirty;
        state.dirty = true;
        self.dirty += new as usize;
        new
    }

    /// Marks paths dirty without an event (seen in the last run, not compared yet).
    pub fn mark_dirty(&mut self, paths: impl IntoIterator<Item = String>) {
        for p in paths {
            let state = self.paths.entry(p).or_default();
            self.dirty += !state.dirty as usize;
            state.dirty = true;
        }
    }

    pub fn is_dirty(&self, rel: &str) -> bool {
        self.paths.get(rel).is_some_and(|s| s.dirty)
    }

    pub fn has_dirty(&self) -> bool {
        self.dirty > 0
    }

    pub fn dirty_paths(&self) -> impl Iterator<Item = &String> {
        self.paths.iter().filter(|(_, s)| s.dirty).map(|(p, _)| p)
    }

    /// A file's hash queued at `seq` came back: kept if it is still the path's last event.
    pub fn hashed(&mut self, rel: &str, seq: u64, result: Option<FileMeta>) {
        if seq > self.settled_seq
            && let Some(state) = self.paths.get_mut(rel)
            && state.seq == seq
        {
            state.known = Some((seq, result));
        }
    }

    /// A whole tree hashed from a job queued at `seq`: kept for paths with no later event.
    pub fn tree_hashed(&mut self, seq: u64, files: Vec<(String, FileMeta)>) {
        if seq <= self.settled_seq {
            return;
        }
        self.paths.reserve(files.len());
        for (rel, meta) in files {
            let state = self.paths.entry(rel).or_default();
            if state.seq <= seq {
                state.known = Some((seq, Some(meta)));
            }
        }
    }

    /// Forgets everything after a comparison that saw all events up to `seq`.
    pub fn settled(&mut self, seq: u64) {
        // A new map, not `clear()`: after a storm the old one's memory goes back.
        self.paths = HashMap::new();
        self.dirty = 0;
        self.settled_seq = seq;
    }
}

impl Known for Changes {
    fn known(&self, rel: &str) -> Option<Option<FileMeta>> {
        let state = self.paths.get(rel)?;
        match state.known {
            Some((at, meta)) if state.seq <= at => Some(meta),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(n: u8) -> FileMeta {
        FileMeta {
            size: n as u64,
            mtime_ns: 0,
            hash: [n; 32],
        }
    }

    #[test]
    fn a_hash_counts_only_while_no_later_event_came() {
        let mut c = Changes::default();
        assert!(c.event("a", 1));
        assert!(!c.event("a", 2));
        c.hashed("a", 1, Some(meta(1))); // overtaken by event 2
        assert_eq!(c.known("a"), None);
        c.hashed("a", 2, Some(meta(2)));
        assert_eq!(c.known("a"), Some(Some(meta(2))));
        c.event("a", 3);
        assert_eq!(c.known("a"), None);
        c.hashed("b", 4, None); // no event for b: ignored
        assert_eq!(c.known("b"), None);
        assert!(c.is_dirty("a") && !c.is_dirty("b"));
        assert_eq!(c.dirty_paths().count(), 1);
    }

    #[test]
    fn a_tree_hash_covers_paths_without_later_events_and_stale_results_are_dropped() {
        let mut c = Changes::default();
        c.event("x", 5);
        c.event("y", 7);
        c.tree_hashed(
            6,
            vec![("x".into(), meta(1)), ("y".into(), meta(2)), ("z".into(), meta(3))],
        );
        assert_eq!(c.known("x"), Some(Some(meta(1))));
        assert_eq!(c.known("y"), None); // changed after the tree was queued
        assert_eq!(c.known("z"), Some(Some(meta(3))));
        assert!(!c.is_dirty("z"));

        c.settled(7);
        assert!(!c.has_dirty());
        assert_eq!(c.known("x"), None);
        c.event("x", 8);
        c.hashed("x", 6, Some(meta(9))); // queued before the comparison
        c.tree_hashed(7, vec![("q".into(), meta(1))]);
        assert_eq!(c.known("x"), None);
        assert_eq!(c.known("q"), None);
    }

    #[test]
    fn seen_paths_are_dirty_without_an_event() {
        let mut c = Changes::default();
        c.mark_dirty(["a".to_string(), "b".to_string(), "a".to_string()]);
        assert!(c.has_dirty());
        assert_eq!(c.dirty_paths().count(), 2);
        assert!(!c.event("a", 1));
    }
}

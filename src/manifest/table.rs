//! The record's form in memory: a rule's paths in one sorted table, compact enough for a host's
//! million files.
//!
//! Every path's bytes sit one after another in one string (`text`), in order, each found by
//! where it starts (a `u32`: a path ends where the next begins); their metadata sit in a vector
//! beside them. A file costs its path's bytes plus 36 bytes (a 16-byte digest, size, mtime and
//! its start), where a `BTreeMap<String, FileMeta>` cost about twice that. A lookup is a binary
//! search.
//!
//! A deploy mostly rewrites files the table holds: those change in place. Paths added or
//! removed go into a small ordered `delta` beside the table (a removed one as `None`), which is
//! merged into a new table once it holds more than an eighth of the table's paths (and at least
//! [`MERGE_FROM`]), so that a burst of new files never costs a copy of the table each.

use std::collections::BTreeMap;
use std::collections::btree_map;
use std::iter::Peekable;
use std::ops::Bound;

use super::FileMeta;

/// Paths added or removed that the table keeps beside it before merging them in.
const MERGE_FROM: usize = 256;

#[derive(Clone, Default)]
pub(super) struct Table {
    /// Every path of the sorted part, one after another.
    text: String,
    /// Where each path of the sorted part starts in `text`.
    starts: Vec<u32>,
    metas: Vec<FileMeta>,
    /// Paths not in the sorted part (`Some`), and paths of the sorted part removed (`None`).
    delta: BTreeMap<Box<str>, Option<FileMeta>>,
    /// How many paths are recorded (the sorted part's, less those removed, plus those added).
    len: usize,
}

impl Table {
    /// A table of `entries`, in any order; of a path given twice, the last counts.
    pub(super) fn from_entries(entries: impl IntoIterator<Item = (String, FileMeta)>) -> Table {
        let mut entries: Vec<(String, FileMeta)> = entries.into_iter().collect();
        // Stable: of equal paths, the last given stays last.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut sorted: Vec<(String, FileMeta)> = Vec::with_capacity(entries.len());
        for (path, meta) in entries {
            match sorted.last_mut() {
                Some(last) if last.0 == path => last.1 = meta,
                _ => sorted.push((path, meta)),
            }
        }
        let text_len = sorted.iter().map(|(p, _)| p.len()).sum();
        Table::build(sorted.iter().map(|(p, m)| (p.as_str(), m)), sorted.len(), text_len)
    }

    /// A table of `entries`, sorted and without a path twice.
    fn build<'a>(entries: impl Iterator<Item = (&'a str, &'a FileMeta)>, len: usize, text_len: usize) -> Table {
        let mut t = Table {
            text: String::with_capacity(text_len.min(u32::MAX as usize)),
            starts: Vec::with_capacity(len),
            metas: Vec::with_capacity(len),
            delta: BTreeMap::new(),
            len: 0,
        };
        for (path, meta) in entries {
            match u32::try_from(t.text.len()) {
                // Past 4 GiB of paths, the rest stay beside the table.
                Ok(start) if t.text.len() + path.len() <= u32::MAX as usize => {
                    t.starts.push(start);
                    t.text.push_str(path);
                    t.metas.push(*meta);
                }
                _ => {
                    t.delta.insert(path.into(), Some(*meta));
                }
            }
            t.len += 1;
        }
        t
    }

    /// Path `i` of the sorted part.
    fn path(&self, i: usize) -> &str {
        let start = self.starts[i] as usize;
        let end = self.starts.get(i + 1).map_or(self.text.len(), |&e| e as usize);
        &self.text[start..end]
    }

    /// Where `path` is in the sorted part (or would be).
    fn find(&self, path: &str) -> Result<usize, usize> {
        let (mut lo, mut hi) = (0, self.starts.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.path(mid).cmp(path) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn get(&self, path: &str) -> Option<&FileMeta> {
        if let Some(d) = self.delta.get(path) {
            return d.as_ref();
        }
        self.find(path).ok().map(|i| &self.metas[i])
    }

    pub(super) fn set(&mut self, path: &str, meta: FileMeta) {
        match self.find(path) {
            Ok(i) => {
                if self.delta.remove(path).is_some() {
                    // It had been removed: it is back.
                    self.len += 1;
                }
                self.metas[i] = meta;
            }
            Err(_) => match self.delta.get_mut(path) {
                Some(slot) => *slot = Some(meta),
                None => {
                    self.delta.insert(path.into(), Some(meta));
                    self.len += 1;
                    self.merge_when_due();
                }
            },
        }
    }

    pub(super) fn remove(&mut self, path: &str) {
        if self.find(path).is_ok() {
            if self.delta.insert(path.into(), None).is_none() {
                self.len -= 1;
                self.merge_when_due();
            }
        } else if let Some(Some(_)) = self.delta.remove(path) {
            self.len -= 1;
        }
    }

    /// Every path and its metadata, in order.
    pub(super) fn iter(&self) -> Iter<'_> {
        self.iter_from("")
    }

    /// The paths from `start` on, in order.
    pub(super) fn iter_from(&self, start: &str) -> Iter<'_> {
        Iter {
            table: self,
            next: self.find(start).unwrap_or_else(|i| i),
            delta: self
                .delta
                .range::<str, _>((Bound::Included(start), Bound::Unbounded))
                .peekable(),
        }
    }

    fn merge_when_due(&mut self) {
        let room = u32::try_from(self.text.len()).is_ok_and(|n| n < u32::MAX);
        if room && self.delta.len() > MERGE_FROM.max(self.starts.len() / 8) {
            let text_len = self.iter().map(|(p, _)| p.len()).sum();
            *self = Table::build(self.iter(), self.len, text_len);
        }
    }
}

/// A table's paths in order: its sorted part and its delta, merged.
pub(super) struct Iter<'a> {
    table: &'a Table,
    /// The next path of the sorted part.
    next: usize,
    delta: Peekable<btree_map::Range<'a, Box<str>, Option<FileMeta>>>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a FileMeta);

    fn next(&mut self) -> Option<Self::Item> {
        let t = self.table;
        loop {
            let sorted = (self.next < t.starts.len()).then(|| t.path(self.next));
            match (sorted, self.delta.peek()) {
                (None, None) => return None,
                (Some(p), Some((k, _))) if &***k == p => {
                    // Removed (a path of the sorted part is only ever `None` in the delta).
                    self.next += 1;
                    let (_, d) = self.delta.next()?;
                    if let Some(m) = d {
                        return Some((p, m));
                    }
                }
                (Some(p), Some((k, _))) if p < &***k => {
                    self.next += 1;
                    return Some((p, &t.metas[self.next - 1]));
                }
                (Some(p), None) => {
                    self.next += 1;
                    return Some((p, &t.metas[self.next - 1]));
                }
                (_, Some(_)) => {
                    let (k, d) = self.delta.next()?;
                    if let Some(m) = d {
                        return Some((k, m));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn meta(n: u8) -> FileMeta {
        FileMeta {
            size: n as u64,
            mtime_ns: n as i64,
            hash: [n; 16],
        }
    }

    fn contents(t: &Table) -> Vec<(String, u8)> {
        t.iter().map(|(p, m)| (p.to_string(), m.size as u8)).collect()
    }

    /// The table answers as an ordered map would through any mix of sets and removals,
    /// merges included (a few thousand operations on a small set of paths cross the merge
    /// threshold many times).
    #[test]
    fn behaves_as_an_ordered_map() {
        let mut rng = fastrand::Rng::with_seed(7);
        let paths: Vec<String> = (0..600)
            .map(|i| format!("d{}/p{i}.html", i % 13))
            .chain(["", "a", "a/", "a/b", "é/ü.html", "z"].map(String::from))
            .collect();
        let initial: Vec<(String, FileMeta)> = paths.iter().step_by(3).map(|p| (p.clone(), meta(1))).collect();
        let mut t = Table::from_entries(initial.clone());
        let mut model: BTreeMap<String, FileMeta> = initial.into_iter().collect();
        for step in 0..20_000u32 {
            let p = &paths[rng.usize(..paths.len())];
            if rng.u8(..3) == 0 {
                t.remove(p);
                model.remove(p);
            } else {
                let m = meta(rng.u8(..));
                t.set(p, m);
                model.insert(p.clone(), m);
            }
            assert_eq!(t.len(), model.len(), "step {step}");
            if step % 997 == 0 {
                let want: Vec<(String, u8)> = model.iter().map(|(p, m)| (p.clone(), m.size as u8)).collect();
                assert_eq!(contents(&t), want, "step {step}");
                for q in &paths {
                    assert_eq!(t.get(q), model.get(q), "{q}");
                    let from: Vec<&str> = t.iter_from(q).map(|(p, _)| p).collect();
                    let want: Vec<&str> = model.range(q.clone()..).map(|(p, _)| p.as_str()).collect();
                    assert_eq!(from, want, "from {q}");
                }
            }
        }
    }

    #[test]
    fn of_a_path_given_twice_the_last_counts() {
        let t = Table::from_entries([("b".to_string(), meta(1)), ("a".into(), meta(2)), ("b".into(), meta(3))]);
        assert_eq!(contents(&t), [("a".to_string(), 2), ("b".to_string(), 3)]);
        assert_eq!(t.len(), 2);
        assert_eq!(Table::default().iter().count(), 0);
        assert_eq!(Table::default().get("x"), None);
    }
}

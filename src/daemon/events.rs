//! Filesystem events: which rule each path belongs to, marking paths dirty, handing finished
//! files to the hashing worker, and taking its results.

use super::*;

/// What the events read for one path in one batch said.
#[derive(Clone, Copy, Debug)]
pub(super) struct Seen {
    /// The last event left a file in its final state (worth hashing now).
    pub(super) done: bool,
    /// One of them was a removal.
    pub(super) removed: bool,
    /// All of them changed attributes only.
    pub(super) attrib: bool,
    /// The last of them says the path is no directory now.
    pub(super) no_new_dir: bool,
}

impl Daemon {
    /// A batch of events from the watcher. Repeated events for one path (a file written in
    /// several chunks) are handled once, as the last of them; the files that are complete go to
    /// the hashing worker in one job per rule.
    pub(super) fn on_watch(&mut self, taken: Taken) {
        let Taken { msgs, newest: now } = taken;
        let mut paths: Vec<(PathBuf, Seen)> = Vec::new();
        // Per rule, how many paths it kept (counted into /metrics once per batch).
        let mut touched: BTreeMap<RuleId, u64> = BTreeMap::new();
        for msg in msgs {
            match msg {
                WatchMsg::Paths {
                    paths: ps,
                    done,
                    removed,
                    attrib,
                    no_new_dir,
                } => {
                    for p in ps {
                        match paths.last_mut() {
                            Some((last, seen)) if *last == p => {
                                seen.done = done;
                                seen.removed |= removed;
                                seen.attrib &= attrib;
                                seen.no_new_dir = no_new_dir;
                            }
                            _ => paths.push((
                                p,
                                Seen {
                                    done,
                                    removed,
                                    attrib,
                                    no_new_dir,
                                },
                            )),
                        }
                    }
                }
                // Said once per rescan asked for: in a storm the queue may overflow hundreds of
                // times before the rescan it asked for begins (each is counted in /metrics).
                WatchMsg::Rescan => {
                    if self.rescan_all(RescanReason::Overflow) {
                        tracing::warn!("the kernel event queue overflowed: rescanning every tree against its manifest");
                    }
                }
                WatchMsg::Behind => {
                    if self.rescan_all(RescanReason::Behind) {
                        tracing::warn!(
                            "purgewatch fell behind the events ({} queued, the rest dropped): rescanning every tree against its manifest",
                            crate::watch::QUEUE_LIMIT
                        );
                    }
                }
                WatchMsg::Error(e) => self.on_watch_error(e),
            }
        }
        let mut to_hash: BTreeMap<RuleId, Vec<(String, u64)>> = BTreeMap::new();
        for (path, seen) in paths {
            self.on_path(&path, now, seen, &mut touched, &mut to_hash);
        }
        for (i, files) in to_hash {
            if let Some(rt) = self.rules.get(i) {
                self.hasher.send(hashahead::Job::Files {
                    rule: rt.rule.name.clone(),
                    root: rt.root.clone(),
                    files,
                });
            }
        }
        for (i, n) in touched {
            if let Some(rt) = self.rules.get(i) {
                metrics::get().events(&rt.rule.name, n);
                self.touch_targets(i, now);
            }
        }
    }

    pub(super) fn on_watch_error(&mut self, e: WatchError) {
        match e {
            WatchError::WatchLimit { .. } => {
                tracing::error!(
                    "{e}; the affected trees are rescanned every {}s until then",
                    POLL_EVERY.as_secs()
                );
                for r in self.rules.values_mut() {
                    metrics::get()
                        .health
                        .set_problem(&r.rule.name, Some(WATCH_LIMIT_PROBLEM.into()));
                    r.coverage = Coverage::Partial;
                }
            }
            e => tracing::error!("{}", crate::logging::chain(&e)),
        }
    }

    /// A result of the hashing worker: recorded (see [`Record::take`]); identical files' new
    /// metadata is written later; a batch held for a whole tree goes once it is listed.
    pub(super) fn on_hashed(&mut self, done: hashahead::Done) {
        if let hashahead::Done::Rewatched { rule, root, result } = done {
            return self.on_rewatched(&rule, &root, result);
        }
        let Some(i) = self.rules.named(done.rule()) else {
            return;
        };
        // While the rule is being compared its manifest is only read: recorded once that is in,
        // after those held before it (see [`Daemon::take_held`]).
        let rt = &mut self.rules[i];
        if rt.comparing().is_some() || !rt.held.is_empty() {
            rt.held.push_back(done);
            return;
        }
        self.record_hashed(i, done);
    }

    /// The first rule with hash results held during its comparison, to take now.
    fn held_ready(&self) -> Option<RuleId> {
        self.rules.find(|r| r.comparing().is_none() && !r.held.is_empty())
    }

    /// Whether a rule has hash results held during its comparison, to take now.
    pub(super) fn has_held(&self) -> bool {
        self.held_ready().is_some()
    }

    /// Takes one held result (a few hundred files) per turn of the loop: after a storm, the
    /// results held during a comparison can be thousands of files, too many for one turn.
    pub(super) fn take_held(&mut self) {
        if let Some(i) = self.held_ready()
            && let Some(done) = self.rules[i].held.pop_front()
        {
            self.record_hashed(i, done);
        }
    }

    /// Records a result of the worker in the record of rule `i`, its rule.
    fn record_hashed(&mut self, i: RuleId, done: hashahead::Done) {
        let Some((rt, manifest)) = self.rules.with_manifest(i) else {
            return;
        };
        let taken = rt.record.take(manifest, &rt.root, done);
        self.writes.refreshed(&rt.rule.name, taken.refreshed);
        // The batch held for this tree goes now.
        if taken.tree_listed.is_some() && rt.tree_pending == taken.tree_listed {
            rt.tree_pending = None;
            let now = Instant::now();
            for t in rt.rule.targets.clone() {
                self.batcher.release(&t, now);
            }
            self.fire_due();
        }
    }

    /// The worker watched a swapped-in tree (or could not): a tree that is no longer the rule's
    /// is not watched; a failure leaves the rule rescanned every [`POLL_EVERY`].
    fn on_rewatched(&mut self, rule: &str, root: &Path, result: Result<(), WatchError>) {
        let Some(rt) = self.rules.values_mut().find(|r| r.rule.name == rule && r.root == root) else {
            if result.is_ok()
                && let Some(mut w) = self.watch()
            {
                w.remove(root, true);
            }
            return;
        };
        if let Err(e) = result {
            tracing::error!(rule = %rule, "{}", crate::logging::chain(&e));
            rt.coverage = Coverage::Partial;
        }
    }

    /// The watcher, for the loop's own changes of watches (the worker holds it only while it
    /// watches a swapped-in tree).
    pub(super) fn watch(&self) -> Option<std::sync::MutexGuard<'_, Watcher>> {
        self.watcher
            .as_ref()
            .map(|w| w.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// One path with events: marks it dirty for every rule the router keeps it for, counts it in
    /// `touched` (per rule) and notes which files are ready `to_hash` (per rule).
    pub(super) fn on_path(
        &mut self,
        path: &Path,
        now: Instant,
        seen: Seen,
        touched: &mut BTreeMap<RuleId, u64>,
        to_hash: &mut BTreeMap<RuleId, Vec<(String, u64)>>,
    ) {
        if path == self.rules_file
            || self.rules_target.as_deref() == Some(path)
            || self.config.includes.iter().any(|i| i.takes(path))
            // On the way to an include directory that is not there yet (made now, or a parent).
            || self.config.includes.iter().any(|i| i.dir.starts_with(path) && !self.include_dirs.contains(&i.dir))
        {
            self.reload_at = Some(now + RELOAD_SETTLE);
        }
        for i in self.rules.at(path) {
            let r = &self.rules[i];
            let manifest = self.rules.manifest(&r.rule.name);
            let tracked = |rel: &str| {
                r.record.is_dirty(rel)
                    || manifest.is_some_and(|m| m.get(rel).is_some() || m.under(rel).next().is_some())
            };
            let rel = match route(&r.root, &r.rule.watch, &r.filter, path, !seen.no_new_dir, tracked) {
                Route::Keep(rel) => rel,
                Route::Outside | Route::Skip(_) => continue,
                Route::Root => {
                    self.reattach(i, now, seen.removed);
                    continue;
                }
                Route::Unnamed => {
                    if self.unnamed.insert(path.to_path_buf()) {
                        tracing::warn!(rule = %r.rule.name, "{}: {}", path.display(), route::UNNAMED);
                    }
                    continue;
                }
            };
            tracing::debug!(rule = %self.rules[i].rule.name, path = %rel, "change seen");
            self.rules[i].first_event_ms.get_or_insert_with(now_ms);
            *touched.entry(i).or_default() += 1;
            if self.rules[i].events_lost() {
                // The rescan an overflow asked for walks the whole tree.
                continue;
            }
            self.seq += 1;
            let seq = self.seq;
            let first = self.rules[i].record.event(&rel, seq, seen.attrib);
            if first {
                self.writes.seen(&self.rules[i].rule.name, &rel, now);
            }
            if seen.done {
                to_hash.entry(i).or_default().push((rel, seq));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::Harness;
    use super::*;
    use crate::hashahead::{Ahead, Known};

    /// After an overflow, events are not recorded until the rescan begins (it walks the whole
    /// tree), which still finds every change; events after it are recorded again.
    #[tokio::test(start_paused = true)]
    async fn after_an_overflow_events_wait_for_the_rescan_that_walks_everything() {
        let mut h = Harness::new(&[("a.html", "a"), ("b.html", "b")], Options::default());
        assert!(h.d.rescan_all(RescanReason::Overflow));
        h.write("a.html", "a2");
        h.write("c.html", "c");
        h.events(&["a.html", "c.html"], true);
        let r = &h.d.rules[h.id()];
        assert!(r.events_lost());
        assert!(!r.record.is_dirty("a.html") && !r.record.is_dirty("c.html"));
        assert!(h.d.batcher.next_deadline().is_some(), "the events still open the batch");
        h.settle_due().await;
        let mut pending = h.pending("cdn");
        pending.sort();
        assert_eq!(pending, ["a.html", "c.html"]);
        assert!(!h.d.rules[h.id()].events_lost() && h.d.rules[h.id()].rescan.is_none());
        h.write("b.html", "b2");
        h.events(&["b.html"], true);
        assert!(h.d.rules[h.id()].record.is_dirty("b.html"), "recorded again");
        // A rescan asked for by a signal loses no event: they are recorded meanwhile.
        assert!(h.d.rescan_all(RescanReason::Signal));
        assert!(!h.d.rules[h.id()].events_lost());
    }

    #[tokio::test(start_paused = true)]
    async fn kept_paths_are_dirty_once_skipped_ones_not_at_all_and_finished_files_are_hashed() {
        let mut h = Harness::new(&[("a.html", "a")], Options::default());
        h.write("a.html", "a2");
        h.write("x.tmp", "scratch");
        h.events(&["a.html", "a.html", "x.tmp"], true);
        let r = &h.d.rules[h.id()];
        assert!(r.record.is_dirty("a.html"));
        assert!(!r.record.is_dirty("x.tmp"), "excluded, and not tracked");
        assert_eq!(
            h.d.writes.seen_paths(),
            [("site".to_string(), "a.html".to_string())],
            "seen once"
        );
        assert!(h.d.batcher.next_deadline().is_some(), "the target's batch is open");
        // The finished file went to the worker, and its hash is recorded when it is back.
        let done = h.next_hashed().await;
        h.d.on_hashed(done);
        let m = &h.d.rules.manifests()["site"];
        let known = h.d.rules[h.id()].record.known(m).known("a.html");
        assert!(
            matches!(known, Known::File(f) if f.hash == crate::hashing::digest_of(b"a2")),
            "{known:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn hashes_that_come_back_while_the_rule_is_compared_wait_for_it() {
        let mut h = Harness::new(&[("a.html", "a"), ("b.html", "b")], Options::default());
        h.write("a.html", "a2");
        h.event("a.html");
        h.debounce().await;
        h.d.fire_due();
        assert!(h.d.rules[h.id()].comparing().is_some());
        // b is written and hashed while a is compared: its hash is held, not judged against a
        // manifest about to move.
        h.write("b.html", "b2");
        h.events(&["b.html"], true);
        let done = h.next_hashed().await;
        h.d.on_hashed(done);
        assert_eq!(h.d.rules[h.id()].held.len(), 1);
        let (id, c) = h.next_compared().await;
        h.d.on_compared(id, c);
        // Taken a part per turn of the loop, in order; a result that comes meanwhile waits its turn.
        assert!(h.d.has_held());
        h.d.take_held();
        assert!(h.d.rules[h.id()].held.is_empty() && !h.d.has_held());
        let m = &h.d.rules.manifests()["site"];
        let known = h.d.rules[h.id()].record.known(m).known("b.html");
        assert!(
            matches!(known, Known::File(f) if f.hash == crate::hashing::digest_of(b"b2")),
            "{known:?}"
        );
    }
}

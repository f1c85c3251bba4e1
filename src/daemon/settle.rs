//! A batch falling due: each rule that feeds the target is compared with its manifest (on a
//! blocking thread: see [`crate::compare`]) and what changed is queued for every target of the
//! rule; a target is sent once every comparison it waits for is in.

use super::ruleset::{Phase, Rescan};
use super::*;
use crate::hashing::Budget;

/// A comparison may read files for at least this long, even past `max_delay`: a batch that fell
/// due at `max_delay` (changes that never stopped) still reads what it can.
pub(super) const READ_AT_LEAST: Duration = Duration::from_secs(1);

/// How many comparisons run at once: twice the cores. A rescan of a host's thousand rules (after
/// an overflow, say) started each on a blocking thread of its own, up to 512 at once, each
/// holding its tree's candidates and findings while they took turns on two cores; the others
/// now wait for a slot, holding only their record.
pub(super) fn comparing_at_once() -> usize {
    2 * std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Daemon {
    pub(super) fn target(&self, name: &str) -> Option<&Target> {
        self.config.target(name)
    }

    pub(super) fn touch_targets(&mut self, i: RuleId, now: Instant) {
        for t in self.rules[i].rule.targets.clone() {
            self.touch_target(&t, now);
        }
    }

    /// A change for `target`, timed by its own debounce and max_delay.
    pub(super) fn touch_target(&mut self, target: &str, now: Instant) {
        if let Some(t) = self.config.target(target) {
            let (d, m) = (t.debounce, t.max_delay);
            self.batcher.touch(target, d, m, now);
        }
    }

    pub(super) fn fire_due(&mut self) {
        let now = Instant::now();
        for target in self.batcher.due(now) {
            // A new tree is still being hashed ahead: comparing now would hash it all again.
            let first = self.batcher.first_change(&target).unwrap_or(now);
            let max_delay = self.target(&target).map(|t| t.max_delay).unwrap_or_default();
            let hashing = self
                .rules
                .values()
                .any(|r| r.tree_pending.is_some() && r.rule.targets.contains(&target));
            if hashing && now < first + max_delay {
                self.batcher.hold(&target, first + max_delay);
                continue;
            }
            self.batcher.close(&target);
            for i in self.rules.ids() {
                let r = &mut self.rules[i];
                if !r.rule.targets.contains(&target) || !r.has_work() {
                    continue;
                }
                if r.comparing().is_some() {
                    // Events came while it was being compared: once that is in, again.
                    r.compare_again();
                } else {
                    self.start_compare(i);
                }
            }
            self.comparing_for.insert(target);
        }
        self.send_compared();
    }

    /// Sends every target whose comparisons are all in, then writes what they found.
    pub(super) fn send_compared(&mut self) {
        let ready: Vec<String> = self
            .comparing_for
            .iter()
            .filter(|t| {
                !self
                    .rules
                    .values()
                    .any(|r| r.comparing().is_some() && r.rule.targets.contains(t))
            })
            .cloned()
            .collect();
        let started = std::time::Instant::now();
        for t in &ready {
            self.comparing_for.remove(t);
            self.start_send(t);
        }
        let sent = started.elapsed();
        self.commit_settled();
        let committed = started.elapsed();
        self.publish_pending();
        self.give_back_memory();
        tracing::debug!(
            target: "purgewatch::loop",
            send_ms = sent.as_secs_f64() * 1000.0,
            commit_ms = (committed - sent).as_secs_f64() * 1000.0,
            trim_ms = (started.elapsed() - committed).as_secs_f64() * 1000.0,
            "sent what was compared"
        );
    }

    /// Once [`TRIM_AFTER`] paths have been compared or written (a storm, in one batch or
    /// several), returns the memory that work needed to the system.
    pub(super) fn give_back_memory(&mut self) {
        if self.trim_work >= TRIM_AFTER {
            self.trim_work = 0;
            // On a blocking thread: trimming a heap a storm grew takes tens of milliseconds.
            tokio::task::spawn_blocking(crate::memory::trim);
        }
    }

    /// Starts comparing rule `i` on a blocking thread; the result comes back to
    /// [`Daemon::on_compared`].
    pub(super) fn start_compare(&mut self, i: RuleId) {
        let Some(job) = self.compare_job(i) else { return };
        self.next_compare += 1;
        let id = self.next_compare;
        self.rules[i].compare_began(id);
        tracing::debug!(rule = %self.rules[i].rule.name, "comparing");
        let tx = self.compared_tx.clone();
        let slots = self.compare_slots.clone();
        tokio::spawn(async move {
            let slot = slots.acquire_owned().await;
            let _ = tokio::task::spawn_blocking(move || {
                job.run(|c| {
                    let _ = tx.send((id, c));
                });
                drop(slot);
            })
            .await;
        });
    }

    /// A comparison came back: its findings are queued, hashes that came in meanwhile recorded,
    /// and the targets waiting for it sent.
    pub(super) fn on_compared(&mut self, id: u64, compared: Compared) {
        let Some(i) = self.rules.find(|r| r.comparing() == Some(id)) else {
            // The rule was removed (or re-made by a reload) meanwhile: its result is dropped,
            // and the targets that waited for it go with what they have.
            self.send_compared();
            return;
        };
        let again = self.rules[i].compare_ended();
        let started = std::time::Instant::now();
        self.settled(i, compared);
        tracing::debug!(target: "purgewatch::loop", ms = started.elapsed().as_secs_f64() * 1000.0, "queued what was compared");
        // Hashes that came back meanwhile are recorded a part per turn (see `Daemon::take_held`).
        if again && self.rules[i].has_work() {
            self.start_compare(i);
        }
        self.send_compared();
    }

    /// Compares rule `i`'s dirty paths (or its whole tree) in place (at start-up, and at stop)
    /// and queues what changed. Returns the number of changed files.
    pub(super) fn settle(&mut self, i: RuleId) -> usize {
        match self.compare_job(i) {
            Some(job) => self.settled(i, job.run_here()),
            None => 0,
        }
    }

    /// What comparing rule `i` takes: its record (the rule starts a new one), its manifest,
    /// what to look at. None while its directory is missing.
    pub(super) fn compare_job(&mut self, i: RuleId) -> Option<compare::Job> {
        let name = self.rules[i].rule.name.clone();
        let manifest = self.rules.manifest_mut(&name).clone();
        let r = &mut self.rules[i];
        if !r.root.is_dir() {
            if r.phase != Phase::Missing {
                r.phase = Phase::Missing;
                tracing::warn!(rule = %r.rule.name, "{} is not there right now; waiting for it to come back", r.root.display());
                metrics::get()
                    .health
                    .set_problem(&name, Some(format!("{} is missing", r.rule.watch.display())));
            }
            return None;
        }
        if r.phase == Phase::Missing {
            metrics::get().health.set_problem(&name, None);
            r.phase = Phase::Idle;
        }
        // What is about to be compared must not be written as seen after the comparison, and
        // what was written before it is forgotten once it is committed (a millisecond early:
        // a path recorded in the same millisecond is kept, and at worst hashed again).
        self.writes.forget_seen(&name);
        r.compare_began_ms = now_ms() - 1;
        r.compared_first_ms = r.first_event_ms.take();
        r.tree_pending = None;
        let scope = match r.rescan.take() {
            // After an overflow the whole tree is walked: the record holds no event since.
            Some(Rescan { events_lost: true, .. }) => compare::Scope::Tree { listed: false },
            Some(Rescan { asked, .. }) => compare::Scope::Tree {
                listed: r.record.tree_covers(asked),
            },
            None => compare::Scope::Dirty,
        };
        let budget = hashing_budget(&self.config, &r.rule.targets, r.compared_first_ms).stopped_by(self.stopping);
        Some(compare::Job {
            budget,
            record: r.record.settled(self.seq, manifest.len()),
            manifest,
            root: r.root.clone(),
            filter: r.filter.clone(),
            scope,
            list_identical: self.opts.dry_run || tracing::enabled!(tracing::Level::DEBUG),
            rule: name,
        })
    }

    /// Queues what comparing rule `i` found for each of its targets and moves its manifest
    /// forward. Returns the number of changed files.
    pub(super) fn settled(&mut self, i: RuleId, c: Compared) -> usize {
        let name = c.rule;
        let diff = c.diff;
        // A big comparison (or a big record of changes): once its purge is on its way, the
        // memory it took goes back.
        self.trim_work += c.candidates + c.recorded;
        self.skipped(i, &name, &diff.skipped);
        if diff.unhashed > 0 {
            tracing::info!(
                rule = %name,
                files = diff.unhashed,
                "not read within max_delay: purged by size and mtime (read at their next change)"
            );
        }
        // Only the entries of files that changed go into the batch's transaction; new metadata
        // for identical bytes is written a little later, off the path to the purge.
        let (now_updates, later) = (diff.updates, diff.refreshed);
        let manifest_len = self.move_forward(&name, c.moved_forward, &later, &now_updates, c.links);
        self.writes.refreshed(&name, later.into_iter().map(|(p, _)| p));
        if now_updates.is_empty() {
            self.writes.settled(Settled {
                rule: name,
                updates: Vec::new(),
                rows: Vec::new(),
                seen_up_to: self.rules[i].compare_began_ms,
            });
            return 0;
        }
        metrics::get().manifest(&name, manifest_len);
        let rows = self.queue_changes(i, &name, &diff.changes);
        let files = diff.changes.len();
        tracing::debug!(
            rule = %name,
            candidates = c.candidates,
            hashed = diff.hashed,
            changed = files,
            expand_ms = c.expand.as_millis() as u64,
            diff_ms = c.compare.as_millis() as u64,
            "settled"
        );
        // Written once the purges are on their way: see [`Daemon::commit_settled`].
        self.writes.settled(Settled {
            rule: name,
            updates: now_updates,
            rows,
            seen_up_to: self.rules[i].compare_began_ms,
        });
        // A target whose own timer is not running yet (a rescan, a catch-up) gets one now.
        let now = Instant::now();
        for t in self.rules[i].rule.targets.clone().into_iter().filter(|_| files > 0) {
            if self.batcher.first_change(&t).is_none() && !self.batcher.is_busy(&t) && !self.comparing_for.contains(&t)
            {
                self.touch_target(&t, now);
            }
        }
        files
    }

    /// What a comparison of rule `i` left aside: a file not read yet (still being written, or
    /// past the batch's time for reading) is dirty again, for the next batch; the rest is said.
    fn skipped(&mut self, i: RuleId, name: &str, skipped: &[(String, Skip)]) {
        for (path, skip) in skipped {
            if let Skip::NotYet(_) | Skip::Late = skip {
                // Read again at the next batch: the path is dirty again (and seen, for a restart).
                if let Skip::NotYet(_) = skip {
                    tracing::warn!(rule = %name, path = %path, "{}", skip.describe());
                } else {
                    tracing::debug!(rule = %name, path = %path, "{}", skip.describe());
                }
                self.seq += 1;
                if self.rules[i].record.event(path, self.seq, false) {
                    self.writes.seen(name, path, Instant::now());
                }
                self.touch_targets(i, Instant::now());
            } else if let Skip::Unreadable(_) = skip {
                tracing::warn!(rule = %name, path = %path, "skipped: {}", skip.describe());
            } else if self.opts.dry_run {
                tracing::info!(rule = %name, path = %path, "dry-run: skip: {}", skip.describe());
            } else {
                tracing::debug!(rule = %name, path = %path, "skip: {}", skip.describe());
            }
        }
    }

    /// Moves rule `name`'s manifest forward by a comparison's findings (`later`: identical
    /// bytes with new metadata; `now`: changes), or swaps in the one the comparison moved
    /// forward itself. Returns how many files it records.
    fn move_forward(
        &mut self,
        name: &str,
        moved_forward: Option<Arc<Manifest>>,
        later: &[(String, Option<FileMeta>)],
        now: &[(String, Option<FileMeta>)],
        links: crate::links::Links,
    ) -> usize {
        let entry = self.rules.manifest_mut(name);
        match moved_forward {
            // A big comparison moved the manifest forward itself: swapped in, and the old one
            // freed on a blocking thread (100,000 entries take milliseconds to free).
            Some(forward) => {
                let old = std::mem::replace(entry, forward);
                tokio::task::spawn_blocking(move || drop(old));
            }
            None => {
                let manifest = Arc::make_mut(entry);
                manifest.apply(later);
                manifest.apply(now);
                if *manifest.links() != links {
                    manifest.set_links(links);
                }
            }
        }
        entry.len()
    }

    /// Queues `changes` of rule `i` for each of its targets (a file already queued for a target
    /// keeps its first-seen time), and tells the verification gate to expect them. Returns the
    /// rows, for the state.
    fn queue_changes(&mut self, i: RuleId, name: &str, changes: &[Change]) -> Vec<PendingRow> {
        // A file first queued by this batch counts from the batch's first event.
        let now = self.rules[i].compared_first_ms.take().unwrap_or_else(now_ms);
        let rows = self.dispatch.queue(&self.rules[i].rule.targets, name, changes, now);
        self.verifier.expect(
            &self.rules[i].rule,
            changes.iter().map(|c| PendingFile {
                rule: name.to_string(),
                path: c.path.clone(),
                kind: c.kind,
            }),
        );
        rows
    }
}

/// How long comparing a rule whose first change was at `first` (ms) may read files: until that
/// change is `max_delay` old (the smallest of the rule's `targets`'), but at least
/// [`READ_AT_LEAST`] — past it, files not read are purged by their metadata. No limit of its own
/// without a first change (start-up: nothing was promised about changes made while the daemon
/// was down); a stop's limit still applies.
fn hashing_budget(config: &Config, targets: &[String], first: Option<i64>) -> Budget {
    let Some(first) = first else {
        return Budget::OPEN;
    };
    let Some(max_delay) = targets
        .iter()
        .filter_map(|t| config.target(t))
        .map(|t| t.max_delay)
        .min()
    else {
        return Budget::OPEN;
    };
    let age = Duration::from_millis(now_ms().saturating_sub(first).max(0) as u64);
    Budget::until(std::time::Instant::now() + max_delay.saturating_sub(age).max(READ_AT_LEAST))
}

#[cfg(test)]
mod tests {
    use super::super::testing::Harness;
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_due_target_is_sent_once_its_comparison_is_in() {
        let mut h = Harness::new(&[("a.html", "old"), ("b.html", "same")], Options::default());
        h.write("a.html", "new");
        h.event("a.html");
        h.event("b.html");
        h.debounce().await;
        h.d.fire_due();
        // Comparing: the loop is free, nothing is queued or sent yet.
        assert!(h.d.rules[h.id()].comparing().is_some());
        assert!(h.d.comparing_for.contains("cdn"));
        assert!(!h.d.dispatch.sending() && h.pending("cdn").is_empty());
        let (id, compared) = h.next_compared().await;
        assert_eq!(compared.candidates, 2);
        h.d.on_compared(id, compared);
        assert_eq!(h.pending("cdn"), ["a.html"], "b.html holds the same bytes");
        assert_eq!(h.d.dispatch.sends_running(), 1, "the send started");
        assert!(h.d.comparing_for.is_empty() && h.d.rules[h.id()].comparing().is_none());
        // The manifest moved forward: a.html's new bytes are the record now.
        let hash = crate::hashing::digest_of(b"new");
        assert_eq!(h.d.rules.manifests()["site"].get("a.html").map(|m| m.hash), Some(hash));
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_due_during_a_comparison_is_compared_once_that_is_in() {
        let mut h = Harness::new(&[("a.html", "a"), ("b.html", "b")], Options::default());
        h.write("a.html", "a2");
        h.event("a.html");
        h.debounce().await;
        h.d.fire_due();
        let first = h.d.rules[h.id()].comparing().expect("comparing");
        // b changes while a is compared, and its batch falls due too.
        h.write("b.html", "b2");
        h.event("b.html");
        h.debounce().await;
        h.d.fire_due();
        assert!(
            matches!(h.d.rules[h.id()].phase, Phase::Comparing { again: true, .. }),
            "asked to compare again"
        );
        assert_eq!(
            h.d.rules[h.id()].comparing(),
            Some(first),
            "one comparison at a time per rule"
        );
        let (id, c) = h.next_compared().await;
        h.d.on_compared(id, c);
        // The second comparison started at once; the target waits for it.
        let second = h.d.rules[h.id()].comparing().expect("compared again");
        assert_ne!(second, first);
        assert!(!h.d.dispatch.sending() && h.d.comparing_for.contains("cdn"));
        let (id, c) = h.next_compared().await;
        assert_eq!(id, second);
        h.d.on_compared(id, c);
        let mut pending = h.pending("cdn");
        pending.sort();
        assert_eq!(pending, ["a.html", "b.html"]);
        assert_eq!(h.d.dispatch.sends_running(), 1, "one send for both");
    }

    #[tokio::test(start_paused = true)]
    async fn a_rule_removed_while_it_is_compared_drops_the_result() {
        let mut h = Harness::new(&[("a.html", "a")], Options::default());
        h.write("a.html", "a2");
        h.event("a.html");
        h.debounce().await;
        h.d.fire_due();
        let id = h.id();
        h.d.remove_rule(id);
        let (id, c) = h.next_compared().await;
        h.d.on_compared(id, c);
        assert!(h.pending("cdn").is_empty());
        assert!(!h.d.rules.manifests().contains_key("site"));
        assert!(h.d.comparing_for.is_empty(), "the target stops waiting");
    }
}

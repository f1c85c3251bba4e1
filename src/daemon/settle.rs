//! A batch falling due: comparing each rule's dirty paths (or whole tree) with its manifest and
//! queueing what changed for every target of the rule.

use super::*;

impl Daemon {
    pub(super) fn fire_due(&mut self) {
        let now = Instant::now();
        for target in self.batcher.due(now) {
            // A new tree is still being hashed ahead: comparing now would hash it all again.
            let first = self.batcher.first_change(&target).unwrap_or(now);
            let max_delay = self.target(&target).map(|t| t.max_delay).unwrap_or_default();
            let hashing = self
                .rules
                .iter()
                .any(|r| r.tree_pending.is_some() && r.rule.targets.contains(&target));
            if hashing && now < first + max_delay {
                self.batcher.hold(&target, first + max_delay);
                continue;
            }
            self.batcher.close(&target);
            self.settle_for(&target);
            self.start_send(&target);
        }
        self.commit_settled();
        self.publish_pending();
        self.give_back_memory();
    }

    /// Once [`TRIM_AFTER`] paths have been compared or written (a storm, in one batch or
    /// several), returns the memory that work needed to the system.
    pub(super) fn give_back_memory(&mut self) {
        if self.trim_work >= TRIM_AFTER {
            self.trim_work = 0;
            crate::memory::trim();
        }
    }

    pub(super) fn settle_for(&mut self, target: &str) {
        for i in 0..self.rules.len() {
            let r = &self.rules[i];
            if r.rule.targets.iter().any(|t| t == target) && (r.rescan.is_some() || r.changes.has_dirty()) {
                self.settle(i);
            }
        }
    }

    /// Compares rule `i`'s dirty paths (or its whole tree) with the manifest and queues what
    /// changed for each of its targets. Returns the number of changed files.
    pub(super) fn settle(&mut self, i: usize) -> usize {
        // What is about to be compared must not be written as seen after the comparison.
        let name = self.rules[i].rule.name.clone();
        let r = &mut self.rules[i];
        if !r.root.is_dir() {
            if !r.gone {
                r.gone = true;
                tracing::warn!(rule = %r.rule.name, "{} is not there right now; waiting for it to come back", r.root.display());
                metrics::get()
                    .health
                    .set_problem(&name, Some(format!("{} is missing", r.rule.watch.display())));
            }
            return 0;
        }
        if r.gone {
            metrics::get().health.set_problem(&name, None);
        }
        r.gone = false;
        self.unsaved.retain(|(rule, _)| *rule != name);
        let started = std::time::Instant::now();
        let manifest = self.manifests.entry(name.clone()).or_default();
        r.tree_pending = None;
        let (candidates, trust) = if let Some(asked) = r.rescan {
            if r.changes.tree_covers(asked) {
                // The new tree was listed and hashed after the rescan was asked for: its list
                // (and the events since) stand in for walking it again.
                // Files already found to hold the manifest's bytes are not compared again.
                let known = r.changes.known(manifest);
                let mut c = manifest.expand(&r.root, r.changes.paths_to_compare(), &r.filter, &known);
                c.extend(r.changes.tree_lacks().iter().cloned());
                (c, Trust::Metadata)
            } else {
                (manifest.everything(&r.root, &r.filter).0, Trust::Metadata)
            }
        } else {
            (
                // Files already found to hold the manifest's bytes are not compared again.
                manifest.expand(
                    &r.root,
                    r.changes.dirty_to_compare(),
                    &r.filter,
                    &r.changes.known(manifest),
                ),
                Trust::Content,
            )
        };
        let expanded = started.elapsed();
        let list_identical = self.opts.dry_run || tracing::enabled!(tracing::Level::DEBUG);
        let diff = manifest.diff(
            &r.root,
            &candidates,
            &r.filter,
            trust,
            &r.changes.known(manifest),
            list_identical,
        );
        let n_candidates = candidates.len();
        let diffed = started.elapsed();
        // A big comparison (or a big record of changes, about to be dropped): once its purge is
        // on its way, its memory goes back.
        self.trim_work += n_candidates + r.changes.recorded();
        let spent = r.changes.settled(self.seq);
        self.spent.push((candidates, spent));
        r.rescan = None;
        let compared = started.elapsed();
        for (path, skip) in &diff.skipped {
            if let Skip::Unreadable(_) = skip {
                tracing::warn!(rule = %name, path = %path, "skipped: {}", skip.describe());
            } else if self.opts.dry_run {
                tracing::info!(rule = %name, path = %path, "dry-run: skip: {}", skip.describe());
            } else {
                tracing::debug!(rule = %name, path = %path, "skip: {}", skip.describe());
            }
        }
        // Only the entries of files that changed go into the batch's transaction; new metadata
        // for identical bytes is written a little later, off the path to the purge.
        let (now_updates, later) = (diff.updates, diff.refreshed);
        manifest.apply(&later);
        if self.store.is_some() && !later.is_empty() {
            self.deferred
                .entry(name.clone())
                .or_default()
                .extend(later.into_iter().map(|(p, _)| p));
            self.deferred_at.get_or_insert(Instant::now() + DEFERRED_FLUSH);
        }
        if now_updates.is_empty() {
            self.uncommitted.push(Settled {
                rule: name,
                updates: Vec::new(),
                rows: Vec::new(),
            });
            return 0;
        }
        let targets: Vec<String> = r.rule.targets.clone();
        let now = now_ms();
        let mut rows = Vec::with_capacity(targets.len() * diff.changes.len());
        for t in &targets {
            let queued = self.pending.get(t);
            for Change { path, kind } in &diff.changes {
                let key = (name.clone(), path.clone());
                // A file already queued for the target keeps its first-seen time.
                let first = queued.and_then(|p| p.get(&key)).map(|r| r.first_seen_ms);
                rows.push(PendingRow {
                    target: t.clone(),
                    file: PendingFile {
                        rule: key.0,
                        path: key.1,
                        kind: *kind,
                    },
                    first_seen_ms: first.unwrap_or(now),
                    seq: self.next_seq,
                });
                self.next_seq += 1;
            }
        }
        let files = diff.changes.len();
        manifest.apply(&now_updates);
        metrics::get().manifest(&name, manifest.len());
        tracing::debug!(
            rule = %name,
            candidates = n_candidates,
            hashed = diff.hashed,
            changed = files,
            expand_ms = expanded.as_millis() as u64,
            diff_ms = (diffed - expanded).as_millis() as u64,
            forget_ms = (compared - diffed).as_millis() as u64,
            "settled"
        );
        let touched: BTreeSet<String> = rows.iter().map(|r| r.target.clone()).collect();
        for row in &rows {
            self.pending
                .entry(row.target.clone())
                .or_default()
                .insert((row.file.rule.clone(), row.file.path.clone()), row.clone());
        }
        // Written once the purges are on their way: see [`Daemon::commit_settled`].
        self.uncommitted.push(Settled {
            rule: name,
            updates: now_updates,
            rows,
        });
        // A target whose own timer is not running yet (a rescan, a catch-up) gets one now.
        let now = Instant::now();
        for t in touched {
            if self.batcher.first_change(&t).is_none() && !self.batcher.is_busy(&t) {
                self.touch_target(&t, now);
            }
        }
        files
    }
}

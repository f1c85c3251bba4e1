//! Rules at run time: adding one (its watch, its baseline or catch-up), removing one, following
//! a watched directory that is replaced or re-pointed, rescans, and reloading the rules file.

use super::ruleset::root_id;
use super::*;

impl Daemon {
    /// Watches a rule's tree and brings its manifest up to date (baseline or catch-up).
    /// `seen` are paths that produced events in the last run but were not compared yet: they are
    /// hashed whatever their size and mtime say.
    pub(super) fn add_rule(&mut self, rule: Rule, seen: BTreeSet<String>) -> Result<(), DaemonError> {
        if let Some(look) = self.begin_rule(rule, seen)? {
            self.took(look.run())?;
        }
        Ok(())
    }

    /// Watches a rule's tree and reads its record: what is left of its first look at the tree
    /// (its baseline, or the comparison of the whole tree with its record) is returned, to run
    /// on any thread and come back to [`Daemon::took`]. `None`: nothing is left to do.
    pub(super) fn begin_rule(&mut self, rule: Rule, seen: BTreeSet<String>) -> Result<Option<FirstLook>, DaemonError> {
        let mut rt = RuleRt::new(rule)?;
        self.watch_tree(&mut rt)?;
        let name = rt.rule.name.clone();
        let watch = rt.rule.watch.display().to_string();
        let recorded = {
            let (name, watch) = (name.clone(), watch.clone());
            self.read_state(move |s| match s.rule_root(&name)? {
                Some(root) if root == watch => s.load_manifest(&name).map(Some),
                _ => Ok(None),
            })?
            .flatten()
        };
        let i = self.rules.add(rt);
        let Some(manifest) = recorded else {
            let rt = &self.rules[i];
            return Ok(Some(FirstLook::Baseline {
                rule: i,
                root: rt.root.clone(),
                filter: rt.filter.clone(),
                stop: self.stopping,
            }));
        };
        self.rules.set_manifest(name, Arc::new(manifest));
        // Paths with events the last run did not compare: read whatever their metadata says.
        self.rules[i].record.mark_dirty(seen);
        let found = self.settle(i);
        // Then the whole tree, by size and mtime (changes made while stopped).
        self.rules[i].ask_rescan(self.seq, false);
        Ok(self.compare_job(i).map(|job| FirstLook::Compare {
            rule: i,
            job: Box::new(job),
            found,
        }))
    }

    /// Watches rule `rt`'s tree (and its parent, where a swap shows); a tree that cannot be
    /// watched (the kernel's limits) is rescanned every [`POLL_EVERY`] instead.
    fn watch_tree(&mut self, rt: &mut RuleRt) -> Result<(), DaemonError> {
        if let Some(mut w) = self.watch() {
            if let Some(parent) = rt.rule.watch.parent()
                && let Err(e) = w.add(parent, false)
            {
                tracing::warn!(rule = %rt.rule.name, "a replaced or re-pointed directory will not be noticed: {}", crate::logging::chain(&e));
            }
            match w.add(&rt.root, true) {
                Ok(()) => {}
                Err(e @ WatchError::WatchLimit { .. }) => {
                    tracing::error!(rule = %rt.rule.name, "{e}; until then the tree is rescanned every {}s", POLL_EVERY.as_secs());
                    metrics::get()
                        .health
                        .set_problem(&rt.rule.name, Some(WATCH_LIMIT_PROBLEM.into()));
                    rt.coverage = Coverage::Partial;
                }
                Err(e) => return Err(e.into()),
            }
        } else {
            // No inotify instance (the limit of instances is reached): rescanned instead.
            metrics::get()
                .health
                .set_problem(&rt.rule.name, Some(NO_INOTIFY_PROBLEM.into()));
            rt.coverage = Coverage::Partial;
        }
        Ok(())
    }

    /// Takes in what a rule's first look at its tree found.
    pub(super) fn took(&mut self, looked: Looked) -> Result<(), DaemonError> {
        match looked {
            Looked::Compared {
                rule: i,
                compared,
                found,
            } => {
                let found = found + self.settled(i, *compared);
                self.commit_settled();
                if found > 0 {
                    tracing::info!(rule = %self.rules[i].rule.name, files = found, "found changes made while purgewatch was stopped");
                }
            }
            Looked::Baseline { rule: i, manifest } => {
                let name = self.rules[i].rule.name.clone();
                let Some(manifest) = manifest else {
                    tracing::info!(rule = %name, "stopping: the first baseline of this rule was not finished and is taken at the next start");
                    return Ok(());
                };
                tracing::info!(
                    rule = %name,
                    files = manifest.len(),
                    "first start for this rule: took the current tree as the baseline, nothing purged (run `purgewatch purge TARGET --all` for a first purge)"
                );
                let manifest = Arc::new(manifest);
                if let Some(w) = &self.writer {
                    let (name, m) = (name.clone(), manifest.clone());
                    let watch = self.rules[i].rule.watch.display().to_string();
                    w.wait(move |s| s.set_baseline(&name, &watch, &m))?;
                }
                metrics::get().manifest(&name, manifest.len());
                self.rules[i].record = Record::with_room(manifest.len());
                self.rules.set_manifest(name, manifest);
            }
        }
        Ok(())
    }

    pub(super) fn remove_rule(&mut self, i: RuleId) {
        let Some(rt) = self.rules.remove(i) else { return };
        if let Some(mut w) = self.watch() {
            w.remove(&rt.root, true);
            if let Some(parent) = rt.rule.watch.parent() {
                w.remove(parent, false);
            }
        }
    }

    /// Compares every tree with its manifest at the next batch (events may have been lost);
    /// `reason` is counted in `/metrics`.
    /// Returns whether any tree was not already waiting for such a comparison. After an
    /// overflow, events are not recorded until the rescan begins (see
    /// [`ruleset::Rescan::events_lost`]).
    pub(super) fn rescan_all(&mut self, reason: RescanReason) -> bool {
        let now = Instant::now();
        let mut new = false;
        let lost = reason.events_lost();
        for i in self.rules.ids() {
            metrics::get().rescan(&self.rules[i].rule.name, reason.label());
            new |= self.rules[i].rescan.is_none();
            self.rules[i].ask_rescan(self.seq, lost);
            self.touch_targets(i, now);
        }
        new
    }

    /// The watched path was replaced, re-pointed, or removed and made again: watch the new tree
    /// and compare all of it. `removed`: the event was a removal of the watched path.
    pub(super) fn reattach(&mut self, i: RuleId, now: Instant, removed: bool) {
        let r = &mut self.rules[i];
        tracing::debug!(rule = %r.rule.name, removed, "an event for {} itself", r.rule.watch.display());
        // A removed directory took its watch with it: whatever stands there next must be watched
        // anew, even if it got the same inode number.
        r.lost |= removed;
        let Some((new_root, id)) = std::fs::canonicalize(&r.rule.watch)
            .ok()
            .and_then(|root| root_id(&root).ok().map(|id| (root, id)))
        else {
            // Gone, or mid-swap (the new tree is not in place yet; its arrival is another event).
            // A tree moved away took its watches along: whatever comes back, even the same
            // directory moved back, is watched anew. The whole tree is compared at the next
            // batch: if it is still missing then, that is logged and `/healthz` says so.
            r.lost = true;
            r.ask_rescan(self.seq, false);
            self.touch_targets(i, now);
            return;
        };
        if new_root == r.root && id == r.root_id && !r.lost {
            return;
        }
        r.lost = false;
        let old_root = r.root.clone();
        tracing::info!(
            rule = %self.rules[i].rule.name,
            "{} now resolves to {}: comparing the new tree with the last purge",
            self.rules[i].rule.watch.display(),
            new_root.display()
        );
        let r = &mut self.rules[i];
        metrics::get().rescan(&r.rule.name, RescanReason::Swap.label());
        r.root = new_root;
        r.root_id = id;
        self.rules.reindex();
        let r = &mut self.rules[i];
        r.ask_rescan(self.seq, false);
        r.record.root_replaced(self.seq);
        // Hash the new tree while the batch debounces (with a sequence number of its own, so that
        // the result is newer than the last comparison).
        self.seq += 1;
        r.tree_pending = Some(self.seq);
        // The worker watches the new tree (off the loop), then lists and hashes it.
        self.hasher.send(hashahead::Job::Tree {
            rule: r.rule.name.clone(),
            root: r.root.clone(),
            filter: r.filter.clone(),
            seq: self.seq,
            rewatch: self
                .watcher
                .clone()
                .map(|watcher| hashahead::Rewatch { watcher, old_root }),
        });
        self.touch_targets(i, now);
    }

    pub(super) fn poll(&mut self) {
        let now = Instant::now();
        for i in self.rules.ids() {
            if self.rules[i].polled() {
                metrics::get().rescan(&self.rules[i].rule.name, RescanReason::WatchLimit.label());
                self.rules[i].ask_rescan(self.seq, false);
                self.touch_targets(i, now);
            }
        }
    }

    /// Watches the directory of every `include:` glob (a file added, saved or removed there is a
    /// reload), and no longer the ones the rules dropped.
    pub(super) fn watch_includes(&mut self) {
        let wanted: BTreeSet<PathBuf> = self.config.includes.iter().map(|i| i.dir.clone()).collect();
        let Some(mut w) = self
            .watcher
            .as_ref()
            .map(|w| w.lock().unwrap_or_else(|e| e.into_inner()))
        else {
            return;
        };
        for dir in self.include_dirs.difference(&wanted) {
            w.remove(dir, false);
        }
        let mut watched = BTreeSet::new();
        for dir in wanted {
            // A directory not made yet: its nearest ancestor is watched, so that making it (and
            // then adding files) takes effect without a SIGHUP.
            let dir = match dir.is_dir() {
                true => dir,
                false => match dir.ancestors().skip(1).find(|a| a.is_dir()) {
                    Some(a) => a.to_path_buf(),
                    None => continue,
                },
            };
            if self.include_dirs.contains(&dir) {
                watched.insert(dir);
                continue;
            }
            match w.add(&dir, false) {
                Ok(()) => {
                    watched.insert(dir);
                }
                Err(e) => tracing::warn!(
                    "include: {} is not watched (a file added or saved there needs SIGHUP): {}",
                    dir.display(),
                    crate::logging::chain(&e)
                ),
            }
        }
        drop(w);
        self.include_dirs = watched;
    }

    /// Serves `/metrics` and `/healthz` on `addr` instead: the new address is taken first, and
    /// the working endpoint stays where the new one cannot be had (a port in use). Only the same
    /// port, which the old endpoint itself holds, is let go before it is taken again.
    /// Returns where it is served now.
    fn move_monitor(&mut self, addr: Option<std::net::SocketAddr>) -> Option<std::net::SocketAddr> {
        let Some(addr) = addr else {
            self.monitor = None;
            return None;
        };
        let same_port = self.config.metrics_listen.is_some_and(|old| old.port() == addr.port());
        if same_port {
            self.monitor = None;
        }
        match crate::monitor::start(addr) {
            Ok(server) => {
                self.monitor = Some(server);
                Some(addr)
            }
            Err(e) if self.monitor.is_some() => {
                let old = self.config.metrics_listen;
                tracing::error!(
                    "reload: {e}; /metrics and /healthz stay on {}",
                    old.map(|a| a.to_string()).unwrap_or_default()
                );
                old
            }
            Err(e) => {
                tracing::error!("reload: {e}; /metrics and /healthz are off until the next reload");
                None
            }
        }
    }

    pub(super) fn reload(&mut self, why: &str) {
        let loaded = match config::reload(
            &self.config.source,
            LoadOptions {
                dry_run: self.opts.dry_run,
                ..Default::default()
            },
            &self.config,
        ) {
            Ok(l) => l,
            Err(e) => {
                for line in e.to_string().lines() {
                    tracing::error!("reload ({why}) failed, the current rules stay in force: {line}");
                }
                systemd::status("reload failed: the current rules stay in force");
                return;
            }
        };
        systemd::reloading();
        for w in &loaded.warnings {
            tracing::warn!("{w}");
        }
        // An included file with an error is refused alone: its previous version stays.
        for d in &loaded.refused {
            tracing::error!(
                "reload ({why}): {d} (that file's previous version stays in force; the other files' changes take effect)"
            );
        }
        let new = loaded.config;
        crate::secret::remember(new.secrets().iter());
        self.reserve_state_dir(&new.state_dir);
        let mut listen = new.metrics_listen;
        if new.metrics_listen != self.config.metrics_listen {
            listen = self.move_monitor(new.metrics_listen);
        }
        self.drop_moved_rules(&new);
        self.config = Config {
            state_dir: self.config.state_dir.clone(),
            metrics_listen: listen,
            ..new.clone()
        };
        self.stopping.set_hashing_grace(self.config.shutdown_timeout / 2);
        self.dispatch.set_providers(&self.config.targets);
        self.watch_includes();
        self.verifier.keep_rules(&self.config.rules);
        for t in self.dispatch.keep_targets(&self.config) {
            self.batcher.forget(&t);
        }
        self.take_rules(new.rules);
        let names: Vec<&str> = self.rules.values().map(|r| r.rule.name.as_str()).collect();
        metrics::get().health.retain_rules(&names);
        self.publish_pending();
        // More (or fewer) trees: the kernel's limits judged again.
        self.judge_limits();
        let status = self.summary();
        tracing::info!("reloaded {}: {status}", self.config.source.display());
        systemd::ready(&status);
    }

    /// A `state_dir` changed by a reload takes effect at the next start; until then it is
    /// held, so that a second daemon cannot start on it beside this one.
    fn reserve_state_dir(&mut self, new: &Path) {
        if new != self.config.state_dir {
            tracing::warn!(
                "state_dir {} takes effect at the next start; until then the state stays in {}",
                new.display(),
                self.config.state_dir.display()
            );
            // Held meanwhile: a second daemon cannot start on it beside this one.
            if !self.opts.dry_run && self.reserved.as_ref().is_none_or(|(d, _)| *d != new) {
                self.reserved = match DaemonLock::reserve(new, &self.config.state_dir) {
                    Ok(lock) => Some((new.to_path_buf(), lock)),
                    Err(e) => {
                        tracing::warn!("{e}");
                        None
                    }
                };
            }
        } else {
            self.reserved = None;
        }
    }

    /// Rules that are gone from `new`, or that now watch another directory, are dropped; a rule
    /// that keeps its directory keeps its watch, manifest and dirty paths.
    fn drop_moved_rules(&mut self, new: &Config) {
        for i in self.rules.ids() {
            let rt = &self.rules[i];
            let keep = new.rule(&rt.rule.name).is_some_and(|r| r.watch == rt.rule.watch);
            if !keep {
                self.remove_rule(i);
            }
        }
    }

    /// Takes the reloaded `rules`: a rule kept gets its new settings, a new one is added.
    fn take_rules(&mut self, rules: Vec<Rule>) {
        for rule in rules {
            match self.rules.named(&rule.name) {
                Some(i) => {
                    let rt = &mut self.rules[i];
                    rt.filter = rule.filter();
                    rt.rule = rule;
                }
                None => {
                    let name = rule.name.clone();
                    if let Err(e) = self.add_rule(rule, BTreeSet::new()) {
                        tracing::error!(rule = %name, "could not start watching: {}", crate::logging::chain(&e));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Harness, rules_yaml};
    use super::*;

    /// An overflow asks for a rescan of every tree; more overflows before it begins ask for
    /// nothing new (the daemon says so once, not once per overflow); after it, they do again.
    #[tokio::test(start_paused = true)]
    async fn overflows_before_the_rescan_begins_ask_for_nothing_new() {
        let mut h = Harness::new(&[("a.html", "a")], Options::default());
        assert!(h.d.rescan_all(RescanReason::Overflow));
        assert!(!h.d.rescan_all(RescanReason::Overflow));
        assert!(!h.d.rescan_all(RescanReason::Behind));
        h.settle_due().await;
        assert!(h.d.rules[h.id()].rescan.is_none(), "the rescan was taken");
        assert!(h.d.rescan_all(RescanReason::Behind));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_keeps_a_rule_on_the_same_directory_adds_new_ones_and_survives_errors() {
        let mut h = Harness::new(&[("a.html", "a")], Options::default());
        h.write("a.html", "a2");
        h.event("a.html");
        let blog = h.tmp.path().join("blog");
        std::fs::create_dir_all(&blog).unwrap();
        std::fs::write(blog.join("post.html"), "p").unwrap();
        let extra = format!("  - name: blog\n    watch: {}\n    targets: [cdn]\n", blog.display());
        std::fs::write(&h.rules, rules_yaml(h.tmp.path(), &extra)).unwrap();
        h.d.reload("test");
        let names: Vec<&str> = h.d.rules.values().map(|r| r.rule.name.as_str()).collect();
        assert_eq!(names, ["site", "blog"]);
        assert!(
            h.d.rules[h.id()].record.is_dirty("a.html"),
            "the kept rule keeps its record"
        );
        assert_eq!(h.d.rules.manifests()["blog"].len(), 1, "the new rule's baseline");
        // A broken rules file changes nothing.
        std::fs::write(&h.rules, "rules: [").unwrap();
        h.d.reload("test");
        assert_eq!(h.d.rules.len(), 2);
        // A rule that now watches another directory is a new rule: its record starts over.
        let moved = rules_yaml(h.tmp.path(), "").replace("/public", "/blog");
        std::fs::write(&h.rules, moved).unwrap();
        h.d.reload("test");
        assert_eq!(h.d.rules.len(), 1);
        assert!(!h.d.rules[h.id()].record.is_dirty("a.html"));
        assert_eq!(h.d.rules[h.id()].root, std::fs::canonicalize(&blog).unwrap());
    }

    /// A deploy that swaps a new tree in (`mv public.new public`): the rule follows it, the new
    /// tree is hashed ahead while the batch waits, and the comparison finds what changed from
    /// the listing, purging only that.
    #[tokio::test(start_paused = true)]
    async fn a_swapped_in_tree_is_followed_hashed_ahead_and_compared_from_its_listing() {
        let mut h = Harness::new(&[("a.html", "a"), ("b.html", "b"), ("c.html", "c")], Options::default());
        let new = h.tmp.path().join("public.new");
        std::fs::create_dir_all(&new).unwrap();
        for (rel, text) in [("a.html", "a"), ("b.html", "B"), ("d.html", "d")] {
            std::fs::write(new.join(rel), text).unwrap();
        }
        std::fs::rename(&h.site, h.tmp.path().join("public.old")).unwrap();
        std::fs::rename(&new, &h.site).unwrap();
        let id = h.id();
        h.d.reattach(id, Instant::now(), false);
        let seq = h.d.rules[h.id()].tree_pending.expect("the new tree is being hashed");
        assert!(h.d.rules[h.id()].rescan.is_some());
        // The batch is held for the hash; once the tree is listed it goes.
        loop {
            let done = h.next_hashed().await;
            let listed = matches!(done, hashahead::Done::TreeListed { .. });
            h.d.on_hashed(done);
            if listed {
                break;
            }
        }
        assert!(h.d.rules[h.id()].tree_pending.is_none());
        assert!(h.d.rules[h.id()].record.tree_covers(seq - 1));
        h.settle_due().await;
        let mut pending = h.pending("cdn");
        pending.sort();
        assert_eq!(pending, ["b.html", "c.html", "d.html"], "a.html holds the same bytes");
    }
}

//! The daemon's writes to the state directory: paths seen, settled changes (one transaction per
//! rule), deferred metadata, and a state file deleted under the daemon written anew.

use super::*;

/// What waits to be written to the state directory, and when: the one owner of the daemon's
/// pending writes and their timers. Each kind is written off the path to the purge:
///
/// * paths **seen** (an event came, the comparison is not done yet), within [`SEEN_FLUSH`], so
///   that a crash before the comparison still has them compared at the next start;
/// * what each comparison **settled** (queued purges, the manifest moved forward), once the
///   purges are on their way ([`Daemon::commit_settled`]);
/// * **refreshed** metadata of files whose bytes did not change, when no batch is open (or after
///   [`DEFERRED_MAX_WAIT`]), a chunk at a time ([`Daemon::on_deferred_timer`]).
///
/// Without a state directory (a dry run) nothing is kept.
#[derive(Default)]
pub(super) struct Writes {
    enabled: bool,
    seen: Vec<(String, String)>,
    pub(super) seen_at: Option<Instant>,
    settled: Vec<Settled>,
    /// rule → paths, written as the manifest in memory has them then.
    refreshed: BTreeMap<String, Vec<String>>,
    pub(super) refreshed_at: Option<Instant>,
    /// When the oldest refreshed entry was put off.
    refreshed_since: Option<Instant>,
    /// Seen paths to forget (rule, recorded at or before), once their comparison is committed:
    /// written with the refreshed metadata, a chunk at a time.
    forget: Vec<(String, i64)>,
}

impl Writes {
    pub(super) fn new(enabled: bool) -> Writes {
        Writes {
            enabled,
            ..Writes::default()
        }
    }

    /// `rel` of `rule` had its first event since the last comparison.
    pub(super) fn seen(&mut self, rule: &str, rel: &str, now: Instant) {
        if self.enabled {
            self.seen.push((rule.to_string(), rel.to_string()));
            self.seen_at.get_or_insert(now + SEEN_FLUSH);
        }
    }

    /// `rule` is about to be compared: what it saw must not be written as seen after that.
    pub(super) fn forget_seen(&mut self, rule: &str) {
        self.seen.retain(|(r, _)| r != rule);
    }

    /// Files of `rule` whose new metadata (same bytes) is to be written some time.
    pub(super) fn refreshed(&mut self, rule: &str, paths: impl IntoIterator<Item = String>) {
        if self.enabled {
            let mut paths = paths.into_iter().peekable();
            if paths.peek().is_some() {
                self.refreshed.entry(rule.to_string()).or_default().extend(paths);
                self.refreshed_at.get_or_insert(Instant::now() + DEFERRED_FLUSH);
            }
        }
    }

    /// A comparison's findings, written with the next commit.
    pub(super) fn settled(&mut self, settled: Settled) {
        self.settled.push(settled);
    }

    /// Whether anything waits for the deferred timer.
    fn deferred_left(&self) -> bool {
        !self.refreshed.is_empty() || !self.forget.is_empty()
    }

    #[cfg(test)]
    pub(super) fn seen_paths(&self) -> &[(String, String)] {
        &self.seen
    }

    #[cfg(test)]
    pub(super) fn refreshed_left(&self, rule: &str) -> Option<usize> {
        self.refreshed.get(rule).map(Vec::len)
    }
}

/// What one settle of a rule found, to be written in one transaction.
pub(super) struct Settled {
    pub(super) rule: String,
    pub(super) updates: Vec<(String, Option<FileMeta>)>,
    pub(super) rows: Vec<PendingRow>,
    /// The comparison began after this (ms since the epoch): the rule's paths seen by then
    /// are done with.
    pub(super) seen_up_to: i64,
}

impl Daemon {
    /// Notices a state file deleted (or replaced) while the daemon runs, says so, and writes a
    /// new one from what the daemon holds: each rule's record of its tree and the purges still
    /// queued. Without this, every write would go to the deleted file and be lost at the next
    /// start.
    pub(super) fn check_store(&mut self) {
        let Some(store) = self.store.as_ref() else { return };
        if !store.is_gone() {
            return;
        }
        let path = store.path().to_path_buf();
        tracing::error!(
            "the state file {} was deleted or replaced while purgewatch runs: writing a new one from the daemon's record (rules, manifests, queued purges)",
            path.display()
        );
        self.store = None;
        let mut store = match Store::open(&self.config.state_dir) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(
                    "cannot write a new state file: {e}; changes are purged but not recorded until it can be"
                );
                return;
            }
        };
        let mut result = Ok(());
        for rt in &self.rules {
            let name = &rt.rule.name;
            let empty = Manifest::default();
            let manifest = self.manifests.get(name).map_or(&empty, |m| &**m);
            let rows: Vec<PendingRow> = self
                .pending
                .values()
                .flat_map(|p| p.values())
                .filter(|r| &r.file.rule == name)
                .cloned()
                .collect();
            result = result
                .and_then(|()| store.set_baseline(name, &rt.rule.watch.display().to_string(), manifest))
                .and_then(|()| store.commit_changes(name, &[], &rows));
        }
        match result {
            Ok(()) => tracing::info!("wrote a new state file {}", path.display()),
            Err(e) => tracing::error!("writing the new state file {} failed: {e}", path.display()),
        }
        self.store = Some(store);
    }

    /// Writes the paths seen since the last flush to the state directory.
    pub(super) fn flush_seen(&mut self) {
        self.writes.seen_at = None;
        let paths = std::mem::take(&mut self.writes.seen);
        if let Some(s) = self.store.as_mut()
            && !paths.is_empty()
            && let Err(e) = s.record_seen(&paths, now_ms())
        {
            tracing::warn!("could not record seen changes in the state directory: {e}");
        }
    }

    /// Writes deferred manifest entries, a chunk at a time, once no batch is waiting: not while
    /// a swapped-in tree is being hashed (the writes would take CPU from the hash the batch waits
    /// for), nor while a batch is open (a chunk's transaction and fsync would hold the daemon's
    /// thread past the batch's deadline); after [`DEFERRED_MAX_WAIT`], whatever is open.
    pub(super) fn on_deferred_timer(&mut self) {
        let now = Instant::now();
        let since = *self.writes.refreshed_since.get_or_insert(now);
        let busy = self.rules.iter().any(|r| r.tree_pending.is_some()) || self.batcher.next_deadline().is_some();
        if busy && now < since + DEFERRED_MAX_WAIT {
            self.writes.refreshed_at = Some(now + DEFERRED_FLUSH);
            return;
        }
        self.flush_deferred(DEFERRED_CHUNK);
        if self.writes.deferred_left() {
            self.writes.refreshed_at = Some(Instant::now() + DEFERRED_STEP);
        }
    }

    /// Forgets up to `limit` seen paths of committed comparisons, then writes up to what is
    /// left of `limit` of the manifest entries that were left out of the batches' transactions.
    pub(super) fn flush_deferred(&mut self, limit: usize) {
        self.writes.refreshed_at = None;
        let started = std::time::Instant::now();
        let mut left = limit;
        while left > 0
            && let Some((rule, up_to)) = self.writes.forget.first().cloned()
        {
            let Some(store) = self.store.as_mut() else {
                self.writes.forget.clear();
                break;
            };
            match store.forget_seen(&rule, up_to, left) {
                Ok(n) if n >= left => left = 0,
                Ok(n) => {
                    left -= n;
                    self.writes.forget.remove(0);
                }
                Err(e) => {
                    tracing::warn!(rule = %rule, "could not forget compared paths (they are hashed again at the next start): {e}");
                    self.writes.forget.remove(0);
                }
            }
        }
        while left > 0
            && let Some(mut entry) = self.writes.refreshed.first_entry()
        {
            let paths = entry.get_mut();
            let chunk = paths.split_off(paths.len().saturating_sub(left));
            let rule = if paths.is_empty() {
                entry.remove_entry().0
            } else {
                entry.key().clone()
            };
            left -= chunk.len();
            let Some(manifest) = self.manifests.get(&rule) else {
                continue;
            };
            let updates: Vec<(String, Option<FileMeta>)> = chunk
                .into_iter()
                .map(|p| {
                    let meta = manifest.get(&p).copied();
                    (p, meta)
                })
                .collect();
            self.trim_work += updates.len();
            if let Some(s) = self.store.as_mut()
                && let Err(e) = s.update_manifest(&rule, &updates)
            {
                tracing::warn!(rule = %rule, "could not record file metadata (those files are hashed again at the next start): {e}");
            }
        }
        if !self.writes.deferred_left() {
            self.writes.refreshed_since = None;
        }
        tracing::debug!(
            rows = limit - left,
            ms = started.elapsed().as_millis() as u64,
            "wrote deferred file metadata"
        );
        self.give_back_memory();
    }

    /// Writes what the last settles found, each rule in one transaction: its queued purges and
    /// its manifest moved forward (its seen paths are forgotten later, with the deferred
    /// writes: deleting 100,000 of them would hold the loop for 60 ms). Called once the purges are on their way:
    /// the daemon runs on the runtime's `block_on` thread, so the spawned requests go out on the
    /// worker threads while this writes. A crash before it ends costs a second purge of those
    /// files at the next start (the manifest still holds their old bytes), never a lost one.
    pub(super) fn commit_settled(&mut self) {
        self.check_store();
        if let Some(store) = self.store.as_mut() {
            for Settled {
                rule,
                updates,
                rows,
                seen_up_to,
            } in self.writes.settled.drain(..)
            {
                match store.commit_changes(&rule, &updates, &rows) {
                    Ok(()) => {
                        self.writes.forget.push((rule, seen_up_to));
                        self.writes.refreshed_at.get_or_insert(Instant::now() + DEFERRED_FLUSH);
                    }
                    Err(e) => {
                        tracing::error!(rule = %rule, "could not record changes in the state directory (they are purged, but a crash now would lose them): {e}")
                    }
                }
            }
        }
        self.writes.settled.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::Harness;
    use super::*;

    /// New metadata for identical bytes is not urgent: it waits while a batch is open (its
    /// transaction would hold the loop past the batch's deadline), no longer than
    /// [`DEFERRED_MAX_WAIT`], and then goes in chunks of [`DEFERRED_CHUNK`].
    #[tokio::test(start_paused = true)]
    async fn deferred_metadata_waits_for_an_open_batch_then_is_written_in_chunks() {
        let mut h = Harness::new(&[("a.html", "a")], Options::default());
        let newer = FileMeta {
            mtime_ns: 42,
            ..*h.d.manifests["site"].get("a.html").unwrap()
        };
        Arc::make_mut(h.d.manifests.get_mut("site").unwrap()).set("a.html", newer);
        let mut paths: Vec<String> = (0..DEFERRED_CHUNK + 2_000).map(|i| format!("gone/{i}.html")).collect();
        paths.push("a.html".into());
        h.d.writes.refreshed("site", paths);
        // A batch is open: nothing is written yet.
        h.event("a.html");
        h.d.on_deferred_timer();
        assert_eq!(h.d.writes.refreshed_left("site"), Some(DEFERRED_CHUNK + 2_001));
        assert!(h.d.writes.refreshed_at.is_some(), "asked again later");
        tokio::time::advance(DEFERRED_MAX_WAIT).await;
        h.d.on_deferred_timer();
        assert_eq!(h.d.writes.refreshed_left("site"), Some(2_001), "one chunk written");
        assert!(
            h.d.writes
                .refreshed_at
                .is_some_and(|at| at <= Instant::now() + DEFERRED_STEP)
        );
        // The rest, a chunk per turn.
        let mut turns = 0;
        while h.d.writes.refreshed_at.is_some() {
            h.d.on_deferred_timer();
            turns += 1;
        }
        assert_eq!(turns, 2_001usize.div_ceil(DEFERRED_CHUNK));
        assert!(h.d.writes.refreshed.is_empty() && h.d.writes.refreshed_since.is_none());
        let store = Store::open_read_only(&h.tmp.path().join("state")).unwrap().unwrap();
        assert_eq!(store.load_manifest("site").unwrap().get("a.html"), Some(&newer));
    }

    /// Seen paths leave the state directory once their comparison is committed, with the
    /// deferred writes; a path seen after the comparison began stays.
    #[tokio::test(start_paused = true)]
    async fn seen_paths_are_forgotten_once_their_comparison_is_committed() {
        let mut h = Harness::new(&[("a.html", "a"), ("b.html", "b")], Options::default());
        let state = h.tmp.path().join("state");
        let seen = || -> Vec<String> {
            let s = Store::open_read_only(&state).unwrap().unwrap();
            s.seen().unwrap().into_iter().map(|(_, p, _)| p).collect()
        };
        h.write("a.html", "a2");
        h.event("a.html");
        h.d.flush_seen();
        assert_eq!(seen(), ["a.html"]);
        // The record's times are wall-clock milliseconds, and a path recorded within a
        // millisecond of the comparison's start is kept: the comparison begins a few later.
        std::thread::sleep(Duration::from_millis(5));
        h.debounce().await;
        h.d.fire_due();
        // And b is recorded a few milliseconds after it began.
        std::thread::sleep(Duration::from_millis(5));
        h.write("b.html", "b2");
        h.event("b.html");
        h.d.flush_seen();
        let (id, c) = h.next_compared().await;
        h.d.on_compared(id, c);
        assert_eq!(seen(), ["a.html", "b.html"], "committed; forgotten later");
        assert!(h.d.writes.refreshed_at.is_some(), "the deferred writes are due");
        h.d.flush_deferred(usize::MAX);
        assert_eq!(seen(), ["b.html"]);
    }

    /// A state file deleted under the daemon is written anew from its record at the next write.
    #[tokio::test(start_paused = true)]
    async fn a_deleted_state_file_is_written_anew_from_the_daemons_record() {
        let mut h = Harness::new(&[("a.html", "a"), ("b.html", "b")], Options::default());
        let db = h.tmp.path().join("state").join(crate::state::DB_FILE);
        std::fs::remove_file(&db).unwrap();
        h.d.check_store();
        let store = Store::open_read_only(&h.tmp.path().join("state"))
            .unwrap()
            .expect("written anew");
        assert_eq!(store.load_manifest("site").unwrap(), *h.d.manifests["site"]);
    }
}

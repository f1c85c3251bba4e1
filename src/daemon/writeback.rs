//! The daemon's writes to the state directory: paths seen, settled changes (one transaction per
//! rule), deferred metadata, and a state file deleted under the daemon written anew. Each is
//! queued to [`crate::state::Writer`], which writes on a thread of its own, in order; this file
//! decides what is written and when.

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
    /// Comparisons were committed since their seen paths were last forgotten (the writer
    /// keeps which: only a commit that succeeded counts), done with the refreshed metadata.
    forget: bool,
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
        !self.refreshed.is_empty() || self.forget
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
    /// Reads the state: the daemon's own file (after every write asked for before), or in a
    /// dry run the one it only reads. None without either.
    pub(super) fn read_state<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Store) -> Result<T, StateError> + Send + 'static,
    ) -> Result<Option<T>, StateError> {
        match (&self.writer, &self.seed) {
            (Some(w), _) => w.wait(move |s| read(s)).map(Some),
            (None, Some(s)) => read(s).map(Some),
            _ => Ok(None),
        }
    }

    /// The writer found the state file deleted (or replaced) while the daemon runs and opened a
    /// new one at `path`: it gets what the daemon holds, each rule's record of its tree and the
    /// purges still queued. Without this, every write would go to a file nobody reads and be
    /// lost at the next start.
    pub(super) fn rewrite_state(&mut self, path: &Path) {
        let Some(w) = &self.writer else { return };
        let rules: Vec<(String, String, Arc<Manifest>, Vec<PendingRow>)> = self
            .rules
            .values()
            .map(|rt| {
                let name = rt.rule.name.clone();
                let rows = self.dispatch.rows_of(&name);
                let manifest = self.rules.manifest(&name).cloned().unwrap_or_default();
                (name, rt.rule.watch.display().to_string(), manifest, rows)
            })
            .collect();
        let path = path.to_path_buf();
        w.queue(move |d| {
            let mut result = Ok(());
            for (name, watch, manifest, rows) in &rules {
                result = result
                    .and_then(|()| d.store.set_baseline(name, watch, manifest))
                    .and_then(|()| d.store.commit_changes(name, &[], rows));
            }
            match result {
                Ok(()) => tracing::info!("wrote a new state file {}", path.display()),
                Err(e) => tracing::error!("writing the new state file {} failed: {e}", path.display()),
            }
        });
    }

    /// Writes the paths seen since the last flush to the state directory.
    pub(super) fn flush_seen(&mut self) {
        self.writes.seen_at = None;
        let paths = std::mem::take(&mut self.writes.seen);
        if let Some(w) = &self.writer
            && !paths.is_empty()
        {
            let now = now_ms();
            w.queue(move |d| {
                if let Err(e) = d.store.record_seen(&paths, now) {
                    tracing::warn!("could not record seen changes in the state directory: {e}");
                }
            });
        }
    }

    /// Writes deferred manifest entries, a chunk at a time, once no batch is waiting: not while
    /// a swapped-in tree is being hashed, nor while a batch is open (on two cores, the writer's
    /// transactions would take CPU from the hash and the comparison the batch waits for, and a
    /// batch's own commit would queue behind them); after [`DEFERRED_MAX_WAIT`], whatever is
    /// open. A chunk at a time also keeps each turn that reads the entries from the manifest
    /// short.
    pub(super) fn on_deferred_timer(&mut self) {
        let now = Instant::now();
        let since = *self.writes.refreshed_since.get_or_insert(now);
        let busy = self.rules.values().any(|r| r.tree_pending.is_some()) || self.batcher.next_deadline().is_some();
        if busy && now < since + DEFERRED_MAX_WAIT {
            self.writes.refreshed_at = Some(now + DEFERRED_FLUSH);
            return;
        }
        self.flush_deferred(DEFERRED_CHUNK);
        if self.writes.deferred_left() {
            self.writes.refreshed_at = Some(Instant::now() + DEFERRED_STEP);
        }
    }

    /// Forgets the seen paths of committed comparisons, then writes up to `limit` of the
    /// manifest entries that were left out of the batches' transactions.
    pub(super) fn flush_deferred(&mut self, limit: usize) {
        self.writes.refreshed_at = None;
        let started = std::time::Instant::now();
        let mut left = limit;
        if std::mem::take(&mut self.writes.forget)
            && let Some(w) = &self.writer
        {
            w.queue(|d| {
                // A chunk per transaction: after a storm there are 100,000 of them.
                for (rule, up_to) in std::mem::take(&mut d.committed) {
                    loop {
                        match d.store.forget_seen(&rule, up_to, DEFERRED_CHUNK) {
                            Ok(n) if n == DEFERRED_CHUNK => continue,
                            Ok(_) => break,
                            Err(e) => {
                                tracing::warn!(rule = %rule, "could not forget compared paths (they are hashed again at the next start): {e}");
                                break;
                            }
                        }
                    }
                }
            });
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
            let Some(manifest) = self.rules.manifest(&rule) else {
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
            if let Some(w) = &self.writer {
                w.queue(move |d| {
                    if let Err(e) = d.store.update_manifest(&rule, &updates) {
                        tracing::warn!(rule = %rule, "could not record file metadata (those files are hashed again at the next start): {e}");
                    }
                });
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
    /// writes). Called once the purges are on their way; written on the writer's thread. A crash
    /// before it ends costs a second purge of those files at the next start (the manifest
    /// still holds their old bytes), never a lost one.
    pub(super) fn commit_settled(&mut self) {
        let settled = std::mem::take(&mut self.writes.settled);
        let Some(w) = &self.writer else { return };
        for Settled {
            rule,
            updates,
            rows,
            seen_up_to,
        } in settled
        {
            w.queue(move |d| match d.store.commit_changes(&rule, &updates, &rows) {
                Ok(()) => d.committed.push((rule, seen_up_to)),
                Err(e) => {
                    tracing::error!(rule = %rule, "could not record changes in the state directory (they are purged, but a crash now would lose them): {e}")
                }
            });
            self.writes.forget = true;
            self.writes.refreshed_at.get_or_insert(Instant::now() + DEFERRED_FLUSH);
        }
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
            ..*h.d.rules.manifests()["site"].get("a.html").unwrap()
        };
        Arc::make_mut(h.d.rules.manifest_mut("site")).set("a.html", newer);
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
        h.synced();
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
        h.synced();
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
        h.synced();
        assert_eq!(seen(), ["a.html", "b.html"], "committed; forgotten later");
        assert!(h.d.writes.refreshed_at.is_some(), "the deferred writes are due");
        h.d.flush_deferred(usize::MAX);
        h.synced();
        assert_eq!(seen(), ["b.html"]);
    }

    /// A state file deleted under the daemon is written anew from its record: the writer
    /// notices at the next write and tells the loop, which hands it the record.
    #[tokio::test(start_paused = true)]
    async fn a_deleted_state_file_is_written_anew_from_the_daemons_record() {
        let mut h = Harness::new(&[("a.html", "a"), ("b.html", "b")], Options::default());
        let db = h.tmp.path().join("state").join(crate::state::DB_FILE);
        std::fs::remove_file(&db).unwrap();
        h.synced();
        let path = h.d.replaced.try_recv().expect("the loop is told");
        assert_eq!(path, db);
        h.d.rewrite_state(&path);
        h.synced();
        let store = Store::open_read_only(&h.tmp.path().join("state"))
            .unwrap()
            .expect("written anew");
        assert_eq!(store.load_manifest("site").unwrap(), *h.d.rules.manifests()["site"]);
    }
}

//! Start-up (the lock, the state writer, each rule's watch and catch-up, work left from the last run)
//! and stop (comparisons finished, pending purges sent within `shutdown_timeout`).

use super::*;

/// The state directory as a start opens it: its lock, the store's writer (or, in a dry run, the
/// store read as it is), and the monitoring endpoint where it had to be taken first.
struct Opened {
    lock: Option<DaemonLock>,
    monitor: Option<crate::monitor::Server>,
    writer: Option<Writer>,
    seed: Option<Store>,
    replaced: mpsc::UnboundedReceiver<PathBuf>,
}

impl Opened {
    fn open(config: &Config, opts: &Options) -> Result<Opened, DaemonError> {
        let mut lock = None;
        // A start refused for a port in use leaves nothing behind: where the state directory is
        // still to be made, the port is taken first. Where it exists, the lock goes first, so
        // that a second daemon on it is told which process holds it.
        let mut monitor = None;
        if !opts.dry_run
            && !config.state_dir.exists()
            && let Some(addr) = config.metrics_listen
        {
            monitor = Some(crate::monitor::start(addr)?);
        }
        let (replaced_tx, replaced) = mpsc::unbounded_channel();
        let (writer, seed) = if opts.dry_run {
            let seed = Store::open_read_only(&config.state_dir).unwrap_or_else(|e| {
                tracing::warn!("dry run: not reading the state ({e}); every rule starts from a new baseline");
                None
            });
            (None, seed)
        } else {
            // One daemon per state directory: the lock first, then the store and its writer.
            lock = Some(DaemonLock::acquire(&config.state_dir)?);
            let store = Store::open(&config.state_dir)?;
            (Some(Writer::start(store, replaced_tx)?), None)
        };
        // Nothing is on its way yet (a daemon that was killed left its purges' rows).
        if let Some(w) = &writer {
            w.queue(|d| {
                if let Err(e) = d.store.clear_sending(None) {
                    tracing::warn!("could not write the state: {e}");
                }
            });
        }
        Ok(Opened {
            lock,
            monitor,
            writer,
            seed,
            replaced,
        })
    }
}

/// What the daemon is started with besides its rules: where the watcher queues events, the
/// hashing worker, where comparisons come back, and the stop token.
pub(super) struct Wiring {
    pub(super) queue: Arc<EventQueue>,
    pub(super) hasher: hashahead::Worker,
    pub(super) compared_tx: mpsc::UnboundedSender<(u64, Compared)>,
    pub(super) stopping: crate::shutdown::Stop,
}

impl Daemon {
    pub(super) fn start(config: Config, opts: Options, wiring: Wiring) -> Result<Daemon, DaemonError> {
        let opened = Opened::open(&config, &opts)?;
        let mut d = Daemon::new(config, opts, opened, wiring)?;
        if d.monitor.is_none()
            && let Some(addr) = d.config.metrics_listen
        {
            d.monitor = Some(crate::monitor::start(addr)?);
        }
        d.watch_rules_file();
        d.watch_includes();
        d.first_looks()?;
        d.judge_limits();
        d.restore_pending()?;
        d.publish_pending();
        Ok(d)
    }

    /// The daemon with its state opened, its rules not added yet.
    fn new(config: Config, opts: Options, opened: Opened, wiring: Wiring) -> Result<Daemon, DaemonError> {
        let Wiring {
            queue,
            hasher,
            compared_tx,
            stopping,
        } = wiring;
        let Opened {
            lock,
            monitor,
            writer,
            seed,
            replaced,
        } = opened;
        let pacer = Arc::new(Pacer::default());
        let rules_file = std::path::absolute(&config.source).unwrap_or_else(|_| config.source.clone());
        Ok(Daemon {
            rules: RuleSet::default(),
            batcher: Batcher::new(),
            dispatch: Dispatcher::new(&config.targets, pacer.clone(), opts.dry_run),
            verifier: Verifier::new(pacer),
            watcher: match Watcher::new(queue, config.rules.iter().any(|r| r.follow_symlinks)) {
                Ok(w) => Some(Arc::new(std::sync::Mutex::new(w))),
                // No inotify instance to be had: every tree is rescanned instead (said below,
                // with the limit and what to set).
                Err(WatchError::InstanceLimit) => None,
                Err(e) => return Err(e.into()),
            },
            reload_at: None,
            seq: 0,
            hasher,
            trim_work: 0,
            writes: writeback::Writes::new(!opts.dry_run),
            compared_tx,
            next_compare: 0,
            stopping,
            compare_slots: Arc::new(tokio::sync::Semaphore::new(settle::comparing_at_once())),
            comparing_for: BTreeSet::new(),
            rules_target: std::fs::canonicalize(&rules_file).ok().filter(|t| *t != rules_file),
            rules_file,
            include_dirs: BTreeSet::new(),
            unnamed: HashSet::new(),
            writer,
            replaced,
            seed,
            _lock: lock,
            reserved: None,
            monitor,
            opts,
            config,
        })
    }

    /// Watches the rules file's directory, and, when the file is a symlink, its target's: a
    /// save edits the target.
    fn watch_rules_file(&mut self) {
        let dirs: Vec<PathBuf> = [Some(self.rules_file.clone()), self.rules_target.clone()]
            .into_iter()
            .flatten()
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .collect();
        for dir in dirs {
            if let Some(mut w) = self.watch()
                && let Err(e) = w.add(&dir, false)
            {
                tracing::warn!(
                    "the rules file will not be reloaded on save (SIGHUP still works): {}",
                    crate::logging::chain(&e)
                );
            }
        }
    }

    /// Adds every rule: its watch, then its first look at its tree (baseline or catch-up), run
    /// on every core while the next rules are watched (see `catchup`). Paths the last run had
    /// events for and did not compare are read whatever their size and mtime say.
    fn first_looks(&mut self) -> Result<(), DaemonError> {
        let seen = self.read_state(|s| s.seen())?.unwrap_or_default();
        let starting = systemd::Starting::begin("starting: reading the state");
        let n_rules = self.config.rules.len();
        let mut pool = catchup::Pool::new();
        for (n, rule) in self.config.rules.clone().into_iter().enumerate() {
            starting.status(&format!(
                "starting: comparing rule \"{}\" ({} of {n_rules}) with its record (a first start hashes its whole tree)",
                rule.name,
                n + 1
            ));
            let paths: BTreeSet<String> = seen
                .iter()
                .filter(|(r, _, _)| *r == rule.name)
                .map(|(_, p, _)| p.clone())
                .collect();
            if let Some(look) = self.begin_rule(rule, paths)?
                && let Some(looked) = pool.push(look)
            {
                self.took(looked)?;
            }
            for looked in pool.ready() {
                self.took(looked)?;
            }
        }
        while let Some(looked) = pool.next() {
            self.took(looked)?;
        }
        drop(pool);
        Ok(())
    }

    /// Takes up the purges the last run queued and did not send: they go first.
    fn restore_pending(&mut self) -> Result<(), DaemonError> {
        let rows = self.read_state(|s| s.pending())?.unwrap_or_default();
        let now = Instant::now();
        for target in self.dispatch.restore(rows, &self.config) {
            self.batcher.due_now(&target, now);
        }
        Ok(())
    }

    pub(super) fn summary(&self) -> String {
        let files = self.dispatch.queued_files();
        format!(
            "{} rule{}, {} target{}, {} file{} pending{}",
            self.rules.len(),
            if self.rules.len() == 1 { "" } else { "s" },
            self.config.targets.len(),
            if self.config.targets.len() == 1 { "" } else { "s" },
            files,
            if files == 1 { "" } else { "s" },
            if self.opts.dry_run {
                " (dry run: nothing is sent)"
            } else {
                ""
            }
        )
    }

    /// Says which of the kernel's inotify limits are too low for the rules (in the log, at
    /// `/healthz` and in the state for `status`), with the `sysctl` lines to set.
    pub(super) fn judge_limits(&mut self) {
        use crate::limits::{InUse, Kernel, Needs, judge, warning};
        let own = InUse::own();
        // A tree not fully watched needs a watch per directory it has: estimated from its record.
        let unwatched: u64 = self
            .rules
            .values()
            .filter(|r| r.polled())
            .map(|r| self.rules.manifest(&r.rule.name).map_or(1, |m| m.directories() as u64))
            .sum();
        let needs = Needs {
            watches: own.watches + unwatched,
            largest: self
                .rules
                .manifests()
                .iter()
                .max_by_key(|(_, m)| m.len())
                .map(|(name, m)| (name.clone(), m.len() as u64)),
        };
        let me = std::process::id();
        let others = InUse::now(|pid, _| pid == me);
        let short = judge(Kernel::read(), others, &needs);
        let unwatched: Vec<&str> = self
            .rules
            .values()
            .filter(|r| r.polled())
            .map(|r| r.rule.name.as_str())
            .collect();
        let text = warning(&short).map(|w| match unwatched.is_empty() {
            true => w,
            false => format!(
                "{w}\n  not fully watched meanwhile, rescanned every {}s: rule{} {}",
                POLL_EVERY.as_secs(),
                if unwatched.len() == 1 { "" } else { "s" },
                unwatched.join(", ")
            ),
        });
        if let Some(t) = &text {
            tracing::warn!("{t}");
        }
        metrics::get()
            .health
            .set_warnings(short.iter().map(|s| s.to_string()).collect());
        if let Some(w) = &self.writer {
            w.queue(move |d| {
                if let Err(e) = d.store.set_warning("kernel limits", text.as_deref()) {
                    tracing::warn!("could not write the state: {e}");
                }
            });
        }
    }

    /// Stops watching, sends everything pending (bounded by `shutdown_timeout`), and returns.
    pub(super) async fn stop(&mut self, compared: &mut mpsc::UnboundedReceiver<(u64, Compared)>) {
        systemd::stopping();
        self.watcher = None;
        tracing::info!("stopping: sending pending purges");
        // Comparisons under way are waited for; what is left is compared here.
        while self.rules.values().any(|r| r.comparing().is_some()) {
            match compared.recv().await {
                Some((id, c)) => self.on_compared(id, c),
                None => break,
            }
        }
        for i in self.rules.ids() {
            if self.rules[i].has_work() {
                self.settle(i);
            }
        }
        self.commit_settled();
        // The stop's time counts from the signal: the comparisons above had half of it.
        let asked = self
            .stopping
            .requested_at()
            .map(Instant::from_std)
            .filter(|at| *at <= Instant::now())
            .unwrap_or_else(Instant::now);
        let deadline = asked + self.config.shutdown_timeout;
        loop {
            for t in self.batcher.take_all() {
                self.start_send(&t);
            }
            let idle: Vec<String> = self
                .dispatch
                .queued_targets()
                .filter(|t| !self.batcher.is_busy(t))
                .map(str::to_string)
                .collect();
            for t in idle {
                self.start_send(&t);
            }
            if !self.dispatch.sending() {
                break;
            }
            tokio::select! {
                sent = self.dispatch.next_sent() => if let Some(sent) = sent { self.on_sent(sent) },
                _ = sleep_until(deadline) => {
                    let left = self.dispatch.queued_files();
                    tracing::warn!(
                        files = left,
                        "shutdown timeout ({}) reached: what is still pending is kept in the state directory and sent at the next start",
                        humantime::format_duration(self.config.shutdown_timeout)
                    );
                    self.dispatch.abort_sends();
                    break;
                }
            }
        }
        self.dispatch.abort_jobs();
        self.verifier.abort();
        self.flush_deferred(usize::MAX);
        if let Some(w) = &self.writer {
            w.queue(|d| {
                let _ = d.store.clear_sending(None);
            });
        }
        // Every write asked for is done before the lock goes.
        if let Some(w) = self.writer.take() {
            w.finish();
        }
        tracing::info!("stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::Harness;
    use super::*;

    /// Purges queued but not sent when the daemon went away are the first thing the next one
    /// sends, and a change made while it was stopped is found at start-up.
    #[tokio::test(start_paused = true)]
    async fn work_left_from_the_last_run_goes_first_and_changes_made_meanwhile_are_found() {
        let mut h = Harness::new(&[("a.html", "a"), ("b.html", "b")], Options::default());
        h.write("a.html", "a2");
        h.event("a.html");
        h.settle_due().await;
        assert_eq!(h.d.dispatch.sends_running(), 1, "sent to a provider that is not there");
        let Harness {
            d, tmp, site, rules, ..
        } = h;
        drop(d);
        std::fs::write(site.join("b.html"), "b2").unwrap();
        let h = Harness::start(tmp, site, rules, Options::default());
        let mut pending = h.pending("cdn");
        pending.sort();
        assert_eq!(pending, ["a.html", "b.html"]);
        assert!(
            h.d.batcher
                .next_deadline()
                .is_some_and(|at| at <= Instant::now() + Duration::from_secs(1))
        );
        assert!(h.d.summary().contains("2 files pending"), "{}", h.d.summary());
    }
}

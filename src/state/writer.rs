//! The daemon's writes to the state file, on a thread of their own, in the order they were
//! asked for.
//!
//! A transaction and its fsync take from a millisecond to tens of them (a storm's batch commits
//! thousands of rows; forgetting 100,000 seen paths, more). On this thread they never hold the
//! daemon's loop, and, being done in order, a later write never lands before an earlier one: a
//! file's new metadata never overwritten by an older one, a purge never cleared before it was
//! queued. Nothing waits for a write but start-up and reload, which read through
//! [`Writer::wait`] (after everything asked before).
//!
//! Before each write the thread checks that the file it writes is still the one at the state
//! file's path: one deleted or replaced under the daemon is noticed, a new one is opened, and
//! the daemon is told (it writes its record there: see `Daemon::rewrite_state`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc;

use super::{PurgeLog, PurgeRecord, StateError, Store};

/// The daemon's name for a purge recorded through the writer: the row id is the writer's to
/// know, so recording one needs no reply.
pub(crate) type PurgeId = u64;

type Work = Box<dyn FnOnce(&mut Desk) + Send>;

/// What the writer's thread holds, and each write reaches.
pub(crate) struct Desk {
    pub store: Store,
    /// Purges recorded whose provider job is followed: where the job's end goes.
    purges: HashMap<PurgeId, i64>,
    /// Comparisons committed (rule, recorded at or before) whose seen paths are still to forget.
    pub committed: Vec<(String, i64)>,
    /// A new state file could not be opened (said once, tried again at each write).
    reopen_failed: bool,
    /// Told when a new state file was opened in place of a deleted or replaced one.
    replaced: tokio::sync::mpsc::UnboundedSender<PathBuf>,
}

/// The queue to the writer's thread. Dropping it (or [`Writer::finish`]) waits for every write
/// asked for.
pub(crate) struct Writer {
    tx: Option<mpsc::Sender<Work>>,
    thread: Option<std::thread::JoinHandle<()>>,
    path: PathBuf,
    next_purge: PurgeId,
}

impl Writer {
    /// Starts the thread that writes `store`; `replaced` is told the path of a state file
    /// written anew.
    pub(crate) fn start(
        store: Store,
        replaced: tokio::sync::mpsc::UnboundedSender<PathBuf>,
    ) -> Result<Writer, StateError> {
        let path = store.path().to_path_buf();
        let (tx, rx) = mpsc::channel::<Work>();
        let mut desk = Desk {
            store,
            purges: HashMap::new(),
            committed: Vec::new(),
            reopen_failed: false,
            replaced,
        };
        let thread = std::thread::Builder::new()
            .name("purgewatch-state".into())
            .spawn(move || {
                for work in rx {
                    desk.check_file();
                    work(&mut desk);
                }
            })
            .map_err(|e| StateError::Unusable {
                path: path.clone(),
                reason: format!("cannot start the thread that writes it: {e}"),
            })?;
        Ok(Writer {
            tx: Some(tx),
            thread: Some(thread),
            path,
            next_purge: 0,
        })
    }

    /// Queues `work`, to run after everything queued before it.
    pub(crate) fn queue(&self, work: impl FnOnce(&mut Desk) + Send + 'static) {
        if let Some(tx) = &self.tx {
            // The thread ends only when this queue is dropped; a send fails only if it died,
            // and then there is nobody to write anyway (said by `wait`, which start-up uses).
            let _ = tx.send(Box::new(work));
        }
    }

    /// Runs `read` on the store after every write queued before it, and returns what it gave.
    /// Blocks the caller: for start-up and reload only.
    pub(crate) fn wait<T: Send + 'static>(
        &self,
        read: impl FnOnce(&mut Store) -> Result<T, StateError> + Send + 'static,
    ) -> Result<T, StateError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.queue(move |d| {
            let _ = tx.send(read(&mut d.store));
        });
        rx.recv().unwrap_or_else(|_| {
            Err(StateError::Unusable {
                path: self.path.clone(),
                reason: "the thread that writes it has stopped".into(),
            })
        })
    }

    /// Waits for every write queued so far.
    #[cfg(test)]
    pub(crate) fn sync(&self) {
        let _ = self.wait(|_| Ok(()));
    }

    /// Waits for every write queued, and ends the thread.
    pub(crate) fn finish(mut self) {
        self.end();
    }

    fn end(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.end();
    }
}

impl Desk {
    /// Opens a new state file when the one written so far was deleted or replaced, and tells
    /// the daemon (see the module's note).
    fn check_file(&mut self) {
        if !self.store.is_gone() {
            return;
        }
        let path = self.store.path().to_path_buf();
        if !self.reopen_failed {
            tracing::error!(
                "the state file {} was deleted or replaced while purgewatch runs: writing a new one from the daemon's record (rules, manifests, queued purges)",
                path.display()
            );
        }
        let dir = path.parent().map(PathBuf::from).unwrap_or_default();
        match Store::open(&dir) {
            Ok(store) => {
                self.store = store;
                self.reopen_failed = false;
                // Row ids were the old file's.
                self.purges.clear();
                let _ = self.replaced.send(path);
            }
            Err(e) => {
                if !std::mem::replace(&mut self.reopen_failed, true) {
                    tracing::error!(
                        "cannot write a new state file: {e}; changes are purged but not recorded until it can be"
                    );
                }
            }
        }
    }
}

/// The daemon's purge history goes through the writer: a purge is recorded under an id of the
/// daemon's, which its job's end names later.
impl PurgeLog for Writer {
    type Id = PurgeId;

    fn record_purge(&mut self, rec: &PurgeRecord) -> Result<PurgeId, StateError> {
        self.next_purge += 1;
        let id = self.next_purge;
        let (rec, followed) = (rec.clone(), rec.job_id.is_some());
        self.queue(move |d| match d.store.record_purge(&rec) {
            Ok(row) if followed => {
                d.purges.insert(id, row);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(target = %rec.target, "could not record the purge: {e}"),
        });
        Ok(id)
    }

    fn update_job(&mut self, id: PurgeId, state: &str, message: Option<&str>) -> Result<(), StateError> {
        let (state, message) = (state.to_string(), message.map(str::to_string));
        self.queue(move |d| {
            if let Some(row) = d.purges.remove(&id)
                && let Err(e) = d.store.update_job(row, &state, message.as_deref())
            {
                tracing::warn!("could not record the job result: {e}");
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(dir: &std::path::Path) -> (Writer, tokio::sync::mpsc::UnboundedReceiver<PathBuf>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (Writer::start(Store::open(dir).unwrap(), tx).unwrap(), rx)
    }

    fn purge(target: &str, job: Option<&str>) -> PurgeRecord {
        PurgeRecord {
            target: target.into(),
            at_ms: 1,
            files: 1,
            request: "POST /purge".into(),
            result: "accepted".into(),
            job_id: job.map(str::to_string),
            ..Default::default()
        }
    }

    /// Writes land in the order they were asked for, and a read waits for those before it.
    #[test]
    fn writes_are_done_in_order_and_a_read_sees_them_all() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, _) = writer(dir.path());
        for i in 0..100 {
            let rec = purge("cdn", Some(&format!("job-{i}")));
            let id = w.record_purge(&rec).unwrap();
            w.update_job(id, "done", Some(&format!("finished {i}"))).unwrap();
        }
        let last = w.wait(|s| s.last_purges()).unwrap();
        assert_eq!(last["cdn"].job_id.as_deref(), Some("job-99"));
        assert_eq!(last["cdn"].job_state.as_deref(), Some("done"));
        assert_eq!(last["cdn"].message.as_deref(), Some("finished 99"));
        w.queue(|d| d.store.record_seen(&[("site".into(), "a.html".into())], 5).unwrap());
        w.finish();
        // Finishing waited for the last write.
        let s = Store::open_read_only(dir.path()).unwrap().unwrap();
        assert_eq!(s.seen().unwrap(), [("site".to_string(), "a.html".to_string(), 5)]);
    }

    /// A state file deleted under the writer: the next write goes to a new one, the daemon is
    /// told, and a job's end does not go to a row of the new file that happens to share an id.
    #[test]
    fn a_deleted_state_file_is_replaced_and_the_daemon_told() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, mut replaced) = writer(dir.path());
        let old = w.record_purge(&purge("cdn", Some("old-job"))).unwrap();
        w.sync();
        for entry in std::fs::read_dir(dir.path()).unwrap().flatten() {
            if entry.file_name().to_string_lossy().starts_with(super::super::DB_FILE) {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
        let new = w.record_purge(&purge("cdn", Some("new-job"))).unwrap();
        w.update_job(old, "done", Some("the old file's")).unwrap();
        let last = w.wait(|s| s.last_purges()).unwrap();
        assert_eq!(replaced.try_recv().ok(), Some(dir.path().join(super::super::DB_FILE)));
        assert_eq!(last["cdn"].job_id.as_deref(), Some("new-job"));
        assert_eq!(last["cdn"].job_state, None, "not the old purge's job");
        w.update_job(new, "done", None).unwrap();
        let last = w.wait(|s| s.last_purges()).unwrap();
        assert_eq!(last["cdn"].job_state.as_deref(), Some("done"));
        assert!(replaced.try_recv().is_err(), "told once");
    }
}

//! The filesystem source: a `notify` (inotify) watcher whose events go into a channel.
//!
//! The daemon watches each rule's directory recursively, each directory's *parent* without
//! recursion (a `mv public.new public` or a re-pointed `current` symlink shows up there), and the
//! rules file's directory (editors save by replacing the file). Reads are not asked for
//! (`IN_OPEN` is left out of the kernel's watch mask). A kernel queue overflow becomes [`WatchMsg::Rescan`] (the daemon's own, [`WatchMsg::Behind`]). Events are handed over in batches
//! through an [`EventQueue`]: the daemon is woken once when the queue goes from empty to
//! non-empty, lets events gather for [`GATHER`] and then takes everything queued, so a storm of
//! 100,000 events costs a few hundred wake-ups, not one each. If the daemon falls so far behind that the queue holds
//! [`QUEUE_LIMIT`] events, the rest are dropped for a rescan, as when the kernel's own queue
//! overflows.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, Flag, ModifyKind, RenameMode};
use notify::{EventKindMask, RecommendedWatcher, RecursiveMode, Watcher as _};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Events held for the daemon before the rest are dropped for a rescan. Each costs ~230 bytes
/// (its path, notify's vector): at 262,144, a host's every-site redeploy, whose events came
/// faster than two cores could take them, held ~80 MB of them at its peak (365 MB in all; 287 MB
/// at this size, the purge as exact). A 100,000-file tree's storms never fill it.
pub(crate) const QUEUE_LIMIT: usize = 65_536;

/// How long the daemon lets events gather after the first one before taking them: a small delay
/// next to any debounce, and far fewer wake-ups in a storm.
pub(crate) const GATHER: Duration = Duration::from_millis(5);
/// Events handled per turn of the daemon's loop: a storm's backlog of 100,000 events is taken a
/// few milliseconds' work at a time, so that timers, signals and the watchdog are not held up.
pub(crate) const TAKE_LIMIT: usize = 1_024;

/// Events from the notify thread, taken by the daemon in batches.
#[derive(Default)]
pub(crate) struct EventQueue {
    msgs: Mutex<Queued>,
    wake: tokio::sync::Notify,
    /// When the events queued now are taken. Kept here, not in the waiting future, so that a
    /// `recv` cancelled by another `select!` branch does not start its wait over (which, with
    /// other work arriving every few milliseconds, could put events off indefinitely).
    take_at: Mutex<Option<tokio::time::Instant>>,
}

#[derive(Default)]
struct Queued {
    msgs: std::collections::VecDeque<WatchMsg>,
    /// When the newest of them was queued.
    newest: Option<std::time::Instant>,
}

/// Events taken from the queue.
#[derive(Debug)]
pub(crate) struct Taken {
    pub msgs: Vec<WatchMsg>,
    /// When the newest of them was queued by the notify thread. A debounce counts from here,
    /// not from when the daemon got to them: events that queued while the daemon was busy
    /// (re-adding a swapped tree's watches takes tens of milliseconds) are not made later.
    pub newest: tokio::time::Instant,
}

impl EventQueue {
    fn push(&self, msg: WatchMsg) {
        let mut q = self.msgs.lock().unwrap_or_else(|e| e.into_inner());
        let was_empty = q.msgs.is_empty();
        if q.msgs.len() < QUEUE_LIMIT {
            q.msgs.push_back(msg);
        } else if !matches!(q.msgs.back(), Some(WatchMsg::Behind)) {
            q.msgs.push_back(WatchMsg::Behind);
        }
        q.newest = Some(std::time::Instant::now());
        drop(q);
        if was_empty {
            self.wake.notify_one();
        }
    }

    /// Whether no event waits to be taken.
    pub(crate) fn is_empty(&self) -> bool {
        self.msgs.lock().unwrap_or_else(|e| e.into_inner()).msgs.is_empty()
    }

    /// Waits for events, lets more gather for [`GATHER`], and takes what is queued, at most
    /// [`TAKE_LIMIT`] at a time (the rest is there at once for the next call).
    pub(crate) async fn recv(&self) -> Taken {
        loop {
            if !self.msgs.lock().unwrap_or_else(|e| e.into_inner()).msgs.is_empty() {
                // A deploy writes thousands of files: taking them a few milliseconds' worth at a
                // time costs a wake-up per batch instead of one per event, and the daemon sees
                // a file's chunks and its close together.
                let at = *self
                    .take_at
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert_with(|| tokio::time::Instant::now() + GATHER);
                tokio::time::sleep_until(at).await;
                let (msgs, newest) = {
                    let mut q = self.msgs.lock().unwrap_or_else(|e| e.into_inner());
                    let n = q.msgs.len().min(TAKE_LIMIT);
                    let msgs: Vec<WatchMsg> = q.msgs.drain(..n).collect();
                    let newest = q.newest;
                    // What is left is taken at the next turn of the daemon's loop, without a wait.
                    let next = (!q.msgs.is_empty()).then(tokio::time::Instant::now);
                    if q.msgs.is_empty() {
                        q.newest = None;
                    }
                    *self.take_at.lock().unwrap_or_else(|e| e.into_inner()) = next;
                    (msgs, newest)
                };
                // The std clock measures the age (the notify thread is outside the runtime); the
                // runtime's clock dates it (paused in tests). Events taken in parts are each dated
                // by the newest queued: a debounce may end later, never sooner.
                let now = tokio::time::Instant::now();
                let age = newest.map_or(Duration::ZERO, |t| t.elapsed());
                return Taken {
                    msgs,
                    newest: now.checked_sub(age).unwrap_or(now),
                };
            }
            self.wake.notified().await;
        }
    }
}

/// What the watcher reports.
#[derive(Debug)]
pub(crate) enum WatchMsg {
    /// Something happened at these paths (created, written, removed, renamed, attributes).
    /// `done` is true when the event leaves a file in its final state (closed after writing,
    /// renamed into place, removed, attributes changed), so that it is worth hashing now.
    /// `removed` is true for a removal: a watch on a removed directory is gone with it, even if
    /// a new directory of the same name (and, the inode number being reused, the same id) is
    /// there by the time the event is read.
    Paths {
        paths: Vec<PathBuf>,
        done: bool,
        removed: bool,
        /// Only the attributes changed (mode, owner, times): a directory with nothing but such
        /// events holds no file its own events did not name, so it need not be walked.
        attrib: bool,
        /// The event cannot have brought a new directory into the tree (a file was made,
        /// written or closed; the path was removed or moved away; its attributes changed): the
        /// router need not ask the disk whether it is one.
        no_new_dir: bool,
    },
    /// Events were lost (kernel queue overflow): compare every tree with its manifest.
    Rescan,
    /// The daemon fell [`QUEUE_LIMIT`] events behind and the rest were dropped: as for
    /// [`WatchMsg::Rescan`].
    Behind,
    /// The watcher hit a problem it cannot fix by itself.
    Error(WatchError),
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(
        "{}: the inotify watch limit is reached, so changes below it are not seen; raise it with `sysctl fs.inotify.max_user_watches=524288` (persist it in /etc/sysctl.d/)",
        path.display()
    )]
    WatchLimit { path: PathBuf },
    #[error(
        "cannot start inotify: too many inotify instances; raise `sysctl fs.inotify.max_user_instances` (persist it in /etc/sysctl.d/)"
    )]
    InstanceLimit,
    #[error("{}: cannot watch", path.display())]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("inotify failed")]
    Runtime(#[source] notify::Error),
}

fn specialise(err: notify::Error, path: &Path) -> WatchError {
    match &err.kind {
        notify::ErrorKind::MaxFilesWatch => WatchError::WatchLimit {
            path: err.paths.first().cloned().unwrap_or_else(|| path.to_path_buf()),
        },
        notify::ErrorKind::Io(e) if e.raw_os_error() == Some(libc::EMFILE) => WatchError::InstanceLimit,
        _ => WatchError::Watch {
            path: path.to_path_buf(),
            source: err,
        },
    }
}

/// The daemon's watches, shared: each directory is watched once, however many rules (or rules'
/// parents, or the rules file's directory) ask for it, and counted, so that a watch goes only
/// when its last user does.
///
/// Trees may nest (one rule on `/srv/site`, another on `/srv/site/docs`). inotify has one watch
/// per directory, and notify's recursive watches share them: watching the inner tree as well, or
/// unwatching it, would change or take away the outer tree's watches below it. So a watch asked
/// for inside a recursively watched tree is only counted (the outer watch delivers its events,
/// and every rule is offered every event); it is handed to notify when the last covering watch
/// goes, and a recursive watch taken over a tree that had its own watches inside replaces them.
pub(crate) struct Watcher {
    inner: RecommendedWatcher,
    /// What was asked for: (path, recursive) → how many asked.
    asked: BTreeMap<(PathBuf, bool), usize>,
    /// What notify watches: the asked-for watches no recursive watch covers.
    active: HashSet<(PathBuf, bool)>,
}

/// What an event of notify's means to the daemon; None for one it ignores.
fn message(res: notify::Result<notify::Event>) -> Option<WatchMsg> {
    let ev = match res {
        Ok(ev) if ev.need_rescan() || ev.flag() == Some(Flag::Rescan) => return Some(WatchMsg::Rescan),
        Ok(ev) if ev.paths.is_empty() => return None,
        Ok(ev) => ev,
        Err(e) => {
            return Some(match e.kind {
                notify::ErrorKind::MaxFilesWatch => WatchMsg::Error(WatchError::WatchLimit {
                    path: e.paths.first().cloned().unwrap_or_default(),
                }),
                _ => WatchMsg::Error(WatchError::Runtime(e)),
            });
        }
    };
    let (done, removed, attrib, no_new_dir) = match ev.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => (true, false, false, true),
        EventKind::Access(_) => return None,
        EventKind::Modify(ModifyKind::Data(_)) | EventKind::Create(CreateKind::File) => (false, false, false, true),
        EventKind::Create(_) => (false, false, false, false),
        EventKind::Remove(_) => (true, true, false, true),
        // Attributes changed: on a directory, one that was there already (rsync sets a temporary
        // file's times before renaming it, and asking the disk about that name then waits for
        // the directory's lock, which rsync holds while it renames the next one).
        EventKind::Modify(ModifyKind::Metadata(_)) => (true, false, true, true),
        // Moved away (an rsync temp file renamed over its file): nothing is there.
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) => (true, false, false, true),
        // The two halves of a rename, which notify sends on their own too (From, then To).
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => return None,
        _ => (true, false, false, false),
    };
    // Held in the queue until the daemon takes it (up to QUEUE_LIMIT of them in a storm):
    // notify's vector has room for four paths and each path room to grow.
    let mut paths = ev.paths;
    paths.shrink_to_fit();
    for p in &mut paths {
        p.shrink_to_fit();
    }
    Some(WatchMsg::Paths {
        paths,
        done,
        removed,
        attrib,
        no_new_dir,
    })
}

impl Watcher {
    /// A watcher feeding `queue`. With `follow_symlinks`, recursive watches descend into
    /// directory symlinks (a rule with `follow_symlinks: true`); otherwise a symlink that leads out
    /// of a watched tree is not watched through (the roots themselves are resolved before they are
    /// watched, so a `current -> releases/N` root still works).
    pub(crate) fn new(queue: Arc<EventQueue>, follow_symlinks: bool) -> Result<Watcher, WatchError> {
        let handler = move |res: notify::Result<notify::Event>| {
            // notify's own thread: it does not preempt the loop it feeds.
            crate::threads::background_once();
            if let Some(msg) = message(res) {
                queue.push(msg);
            }
        };
        // Everything but opens and read-only closes, filtered in the kernel: the daemon's own
        // hashing (and every reader of the site) would otherwise send an event per file read.
        let kinds = EventKindMask::CREATE
            | EventKindMask::REMOVE
            | EventKindMask::MODIFY_DATA
            | EventKindMask::MODIFY_META
            | EventKindMask::MODIFY_NAME
            | EventKindMask::ACCESS_CLOSE;
        let config = notify::Config::default()
            .with_follow_symlinks(follow_symlinks)
            .with_event_kinds(kinds);
        let inner = RecommendedWatcher::new(handler, config).map_err(|e| specialise(e, Path::new("inotify")))?;
        Ok(Watcher {
            inner,
            asked: BTreeMap::new(),
            active: HashSet::new(),
        })
    }

    pub(crate) fn add(&mut self, path: &Path, recursive: bool) -> Result<(), WatchError> {
        let key = (path.to_path_buf(), recursive);
        if let Some(n) = self.asked.get_mut(&key) {
            *n += 1;
            return Ok(());
        }
        self.asked.insert(key.clone(), 1);
        if self.covered(&key) {
            return Ok(());
        }
        // A recursive watch takes over the watches inside its tree (and a plain watch of its
        // own directory).
        if recursive {
            for inside in self.under(path) {
                if self.active.remove(&inside) {
                    let _ = self.inner.unwatch(&inside.0);
                }
            }
        }
        match self.inner.watch(path, mode(recursive)) {
            Ok(()) => {
                self.active.insert(key);
                Ok(())
            }
            Err(e) => {
                self.asked.remove(&key);
                if recursive {
                    self.uncover(path);
                }
                Err(specialise(e, path))
            }
        }
    }

    pub(crate) fn remove(&mut self, path: &Path, recursive: bool) {
        let key = (path.to_path_buf(), recursive);
        match self.asked.get_mut(&key) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                self.asked.remove(&key);
                if self.active.remove(&key) {
                    // The directory may be gone already, which removed the watch with it.
                    let _ = self.inner.unwatch(path);
                    if recursive {
                        self.uncover(path);
                    }
                }
            }
            None => {}
        }
    }

    /// Drops and re-adds a recursive watch (its directory was replaced in place). A tree inside
    /// another recursively watched tree needs nothing: the outer watch follows the new
    /// directory in.
    pub(crate) fn refresh(&mut self, path: &Path) -> Result<(), WatchError> {
        if !self.active.contains(&(path.to_path_buf(), true)) {
            return Ok(());
        }
        let _ = self.inner.unwatch(path);
        self.inner
            .watch(path, RecursiveMode::Recursive)
            .map_err(|e| specialise(e, path))
    }

    /// Whether a recursive watch asked for covers `key`: one of a directory above it, or of its
    /// own directory (for a plain watch).
    fn covered(&self, (path, recursive): &(PathBuf, bool)) -> bool {
        (!recursive && self.asked.contains_key(&(path.clone(), true)))
            || path
                .ancestors()
                .skip(1)
                .any(|a| self.asked.contains_key(&(a.to_path_buf(), true)))
    }

    /// The watches asked for inside `path` (its own plain watch included).
    fn under(&self, path: &Path) -> Vec<(PathBuf, bool)> {
        self.asked
            .range((path.to_path_buf(), false)..)
            .map(|(k, _)| k)
            .take_while(|(p, _)| p.starts_with(path))
            .filter(|(p, r)| p != path || !r)
            .cloned()
            .collect()
    }

    /// The recursive watch of `path` went: the watches inside it that nothing else covers are
    /// handed to notify.
    fn uncover(&mut self, path: &Path) {
        for key in self.under(path) {
            if self.active.contains(&key) || self.covered(&key) {
                continue;
            }
            match self.inner.watch(&key.0, mode(key.1)) {
                Ok(()) => {
                    self.active.insert(key);
                }
                // Gone since (a swap will watch what comes), or a limit: said where it happens.
                Err(e) => tracing::error!("{}", crate::logging::chain(&specialise(e, &key.0))),
            }
        }
    }
}

fn mode(recursive: bool) -> RecursiveMode {
    if recursive {
        RecursiveMode::Recursive
    } else {
        RecursiveMode::NonRecursive
    }
}

#[cfg(test)]
mod tests {
    /// Which events may have brought a directory (the router asks the disk only for those), and
    /// which are dropped.
    #[test]
    fn events_are_read_for_what_they_say_of_the_path() {
        use notify::event::{MetadataKind, RemoveKind};
        let ev = |kind: EventKind, paths: &[&str]| {
            let mut e = notify::Event::new(kind);
            for p in paths {
                e = e.add_path(PathBuf::from(p));
            }
            message(Ok(e))
        };
        let no_new_dir = |m: Option<WatchMsg>| match m {
            Some(WatchMsg::Paths { no_new_dir, .. }) => Some(no_new_dir),
            _ => None,
        };
        let name = |mode| EventKind::Modify(ModifyKind::Name(mode));
        assert_eq!(
            no_new_dir(ev(EventKind::Create(CreateKind::File), &["/s/a"])),
            Some(true)
        );
        assert_eq!(
            no_new_dir(ev(EventKind::Create(CreateKind::Folder), &["/s/d"])),
            Some(false)
        );
        assert_eq!(
            no_new_dir(ev(name(RenameMode::To), &["/s/d"])),
            Some(false),
            "may be a directory moved in"
        );
        assert_eq!(no_new_dir(ev(name(RenameMode::From), &["/s/.a.x1"])), Some(true));
        let times = EventKind::Modify(ModifyKind::Metadata(MetadataKind::WriteTime));
        assert_eq!(
            no_new_dir(ev(times, &["/s/.a.x1"])),
            Some(true),
            "attributes bring nothing new"
        );
        assert_eq!(
            no_new_dir(ev(EventKind::Remove(RemoveKind::Folder), &["/s/d"])),
            Some(true)
        );
        // The two halves of a rename come on their own; the pair, and opens, are dropped.
        assert!(ev(name(RenameMode::Both), &["/s/.a.x1", "/s/a"]).is_none());
        assert!(ev(EventKind::Access(AccessKind::Open(AccessMode::Read)), &["/s/a"]).is_none());
        assert!(ev(EventKind::Create(CreateKind::File), &[]).is_none());
        assert!(matches!(
            message(Err(notify::Error::new(notify::ErrorKind::MaxFilesWatch))),
            Some(WatchMsg::Error(WatchError::WatchLimit { .. }))
        ));
    }

    use super::*;

    /// A failure to watch keeps notify's error as its source: the message says which path, the
    /// chain (as `main` and the daemon's log print it) says why, once.
    #[test]
    fn a_failure_to_watch_keeps_notifys_error_as_its_source() {
        let e = specialise(notify::Error::generic("boom"), Path::new("/srv/site"));
        assert!(matches!(&e, WatchError::Watch { source, .. } if source.to_string() == "boom"));
        assert_eq!(format!("{:#}", anyhow::Error::from(e)), "/srv/site: cannot watch: boom");
        let e = WatchError::Runtime(notify::Error::generic("queue gone"));
        assert_eq!(crate::logging::chain(&e), "inotify failed: queue gone");
    }

    #[test]
    fn the_watch_limit_error_names_the_sysctl_to_raise() {
        let e = specialise(
            notify::Error::new(notify::ErrorKind::MaxFilesWatch),
            Path::new("/srv/site"),
        );
        let msg = e.to_string();
        assert!(
            msg.starts_with("/srv/site: the inotify watch limit is reached"),
            "{msg}"
        );
        assert!(msg.contains("sysctl fs.inotify.max_user_watches="), "{msg}");
    }

    #[tokio::test]
    async fn events_arrive_with_their_paths_and_reads_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Arc::new(EventQueue::default());
        let mut w = Watcher::new(queue.clone(), false).unwrap();
        w.add(dir.path(), true).unwrap();
        let file = dir.path().join("a.html");
        std::fs::write(&file, "x").unwrap();
        let _ = std::fs::read(&file).unwrap();
        let mut done_seen = false;
        while !done_seen {
            let msgs = tokio::time::timeout(std::time::Duration::from_secs(30), queue.recv())
                .await
                .unwrap()
                .msgs;
            for msg in msgs {
                let WatchMsg::Paths { paths, done, .. } = msg else {
                    panic!("unexpected {msg:?}")
                };
                assert_eq!(paths, vec![file.clone()]);
                done_seen |= done;
            }
        }
    }

    /// Waits until an event names `path`.
    async fn event_for(queue: &EventQueue, path: &Path) {
        let found = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            loop {
                for msg in queue.recv().await.msgs {
                    if matches!(&msg, WatchMsg::Paths { paths, .. } if paths.iter().any(|p| p == path)) {
                        return;
                    }
                }
            }
        })
        .await;
        assert!(found.is_ok(), "no event for {}", path.display());
    }

    /// An inner tree watched first, then the tree around it, then the outer watch removed:
    /// events keep coming from directories made at each step, inside and outside.
    #[tokio::test]
    async fn nested_watches_share_the_outer_trees_watches() {
        let dir = tempfile::tempdir().unwrap();
        let outer = dir.path().join("site");
        let inner = outer.join("docs");
        std::fs::create_dir_all(&inner).unwrap();
        let queue = Arc::new(EventQueue::default());
        let mut w = Watcher::new(queue.clone(), false).unwrap();
        w.add(&inner, true).unwrap();
        w.add(&outer, false).unwrap();
        w.add(&outer, true).unwrap();
        assert_eq!(w.active, HashSet::from([(outer.clone(), true)]));
        for (n, base) in [&inner, &outer].into_iter().enumerate() {
            let made = base.join(format!("made{n}"));
            std::fs::create_dir(&made).unwrap();
            // The new directory's watch is added as its creation is read.
            event_for(&queue, &made).await;
            std::fs::write(made.join("a.html"), "x").unwrap();
            event_for(&queue, &made.join("a.html")).await;
        }
        w.remove(&outer, true);
        assert_eq!(w.active, HashSet::from([(outer.clone(), false), (inner.clone(), true)]));
        let later = inner.join("later");
        std::fs::create_dir(&later).unwrap();
        event_for(&queue, &later).await;
        std::fs::write(later.join("b.html"), "x").unwrap();
        event_for(&queue, &later.join("b.html")).await;
    }

    #[tokio::test]
    async fn a_full_queue_turns_into_one_rescan() {
        let q = EventQueue::default();
        for _ in 0..QUEUE_LIMIT + 10 {
            q.push(WatchMsg::Paths {
                paths: vec!["/x".into()],
                done: false,
                removed: false,
                attrib: false,
                no_new_dir: false,
            });
        }
        let mut msgs = Vec::new();
        while msgs.len() < QUEUE_LIMIT + 1 {
            let taken = q.recv().await.msgs;
            assert!(taken.len() <= TAKE_LIMIT);
            msgs.extend(taken);
        }
        assert_eq!(msgs.len(), QUEUE_LIMIT + 1);
        assert!(matches!(msgs.last(), Some(WatchMsg::Behind)));
        assert!(q.msgs.lock().unwrap().msgs.is_empty());
    }

    /// A backlog is handed over [`TAKE_LIMIT`] events at a time, each part at once after the
    /// one before (only the first waits [`GATHER`]), all dated by the newest event.
    #[tokio::test(start_paused = true)]
    async fn a_backlog_is_taken_in_parts_without_waiting_again() {
        let q = EventQueue::default();
        for i in 0..TAKE_LIMIT * 2 + 5 {
            q.push(WatchMsg::Paths {
                paths: vec![format!("/x/{i}").into()],
                done: true,
                removed: false,
                attrib: false,
                no_new_dir: true,
            });
        }
        let start = tokio::time::Instant::now();
        let first = q.recv().await;
        assert_eq!(first.msgs.len(), TAKE_LIMIT);
        assert_eq!(start.elapsed(), GATHER);
        let second = q.recv().await;
        let third = q.recv().await;
        assert_eq!((second.msgs.len(), third.msgs.len()), (TAKE_LIMIT, 5));
        assert_eq!(start.elapsed(), GATHER, "the rest came without another wait");
        // Both dated by the newest event (its age is read on the real clock, a little later).
        let apart = third.newest.max(second.newest) - third.newest.min(second.newest);
        assert!(apart < Duration::from_secs(1), "{apart:?}");
        match &third.msgs[4] {
            WatchMsg::Paths { paths, .. } => assert_eq!(paths[0], PathBuf::from(format!("/x/{}", TAKE_LIMIT * 2 + 4))),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn taken_events_are_dated_when_they_were_queued() {
        let q = EventQueue::default();
        q.push(WatchMsg::Rescan);
        let queued = tokio::time::Instant::now();
        // The daemon is busy elsewhere (re-adding watches) before it takes them.
        std::thread::sleep(Duration::from_millis(30));
        let taken = q.recv().await;
        assert!(taken.newest <= queued);
        assert!(taken.newest + Duration::from_millis(30) <= tokio::time::Instant::now());
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_wait_does_not_start_over() {
        let q = EventQueue::default();
        q.push(WatchMsg::Rescan);
        // Another select! branch wins after 3 ms: the recv is dropped before GATHER elapses.
        tokio::select! {
            _ = q.recv() => panic!("taken before GATHER"),
            _ = tokio::time::sleep(Duration::from_millis(3)) => {}
        }
        let start = tokio::time::Instant::now();
        let msgs = q.recv().await.msgs;
        assert_eq!(msgs.len(), 1);
        assert!(start.elapsed() < GATHER, "the wait started over");
    }
}

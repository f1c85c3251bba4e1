//! The filesystem source: a `notify` (inotify) watcher whose events go into a channel.
//!
//! The daemon watches each rule's directory recursively, each directory's *parent* without
//! recursion (a `mv public.new public` or a re-pointed `current` symlink shows up there), and the
//! rules file's directory (editors save by replacing the file). Reads (`IN_OPEN`) are dropped
//! here. A kernel queue overflow becomes [`WatchMsg::Rescan`]. The channel is bounded: when the
//! daemon falls behind, the notify thread waits and the kernel queue absorbs the burst; if that
//! overflows too, the rescan finds every change against the manifest.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use notify::event::{AccessKind, AccessMode, EventKind, Flag, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

/// What the watcher reports.
#[derive(Debug)]
pub enum WatchMsg {
    /// Something happened at these paths (created, written, removed, renamed, attributes).
    /// `done` is true when the event leaves a file in its final state (closed after writing,
    /// renamed into place, removed, attributes changed), so that it is worth hashing now.
    Paths { paths: Vec<PathBuf>, done: bool },
    /// Events were lost (kernel queue overflow): compare every tree with its manifest.
    Rescan,
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
    #[error("{}: cannot watch: {reason}", path.display())]
    Watch { path: PathBuf, reason: String },
    #[error("inotify: {0}")]
    Runtime(String),
}

fn specialise(err: notify::Error, path: &Path) -> WatchError {
    match &err.kind {
        notify::ErrorKind::MaxFilesWatch => WatchError::WatchLimit {
            path: err.paths.first().cloned().unwrap_or_else(|| path.to_path_buf()),
        },
        notify::ErrorKind::Io(e) if e.raw_os_error() == Some(libc_emfile()) => WatchError::InstanceLimit,
        _ => WatchError::Watch {
            path: path.to_path_buf(),
            reason: err.to_string(),
        },
    }
}

const fn libc_emfile() -> i32 {
    24 // EMFILE: inotify_init1 fails this way when max_user_instances is reached
}

/// Counts of how many users each watch has, so that shared directories are watched once.
pub struct Watcher {
    inner: RecommendedWatcher,
    watches: HashMap<(PathBuf, bool), usize>,
}

impl Watcher {
    pub fn new(tx: mpsc::Sender<WatchMsg>) -> Result<Watcher, WatchError> {
        let handler = move |res: notify::Result<notify::Event>| {
            let msg = match res {
                Ok(ev) if ev.need_rescan() || ev.flag() == Some(Flag::Rescan) => WatchMsg::Rescan,
                Ok(ev) if ev.paths.is_empty() => return,
                Ok(ev) => match ev.kind {
                    EventKind::Access(AccessKind::Close(AccessMode::Write)) => WatchMsg::Paths {
                        paths: ev.paths,
                        done: true,
                    },
                    EventKind::Access(_) => return,
                    EventKind::Modify(ModifyKind::Data(_)) | EventKind::Create(_) => WatchMsg::Paths {
                        paths: ev.paths,
                        done: false,
                    },
                    _ => WatchMsg::Paths {
                        paths: ev.paths,
                        done: true,
                    },
                },
                Err(e) => match e.kind {
                    notify::ErrorKind::MaxFilesWatch => WatchMsg::Error(WatchError::WatchLimit {
                        path: e.paths.first().cloned().unwrap_or_default(),
                    }),
                    _ => WatchMsg::Error(WatchError::Runtime(e.to_string())),
                },
            };
            // The daemon is gone when this fails: nothing left to tell.
            let _ = tx.blocking_send(msg);
        };
        let config = notify::Config::default().with_follow_symlinks(true);
        let inner = RecommendedWatcher::new(handler, config).map_err(|e| specialise(e, Path::new("inotify")))?;
        Ok(Watcher {
            inner,
            watches: HashMap::new(),
        })
    }

    pub fn add(&mut self, path: &Path, recursive: bool) -> Result<(), WatchError> {
        let key = (path.to_path_buf(), recursive);
        if let Some(n) = self.watches.get_mut(&key) {
            *n += 1;
            return Ok(());
        }
        let mode = if recursive {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        self.inner.watch(path, mode).map_err(|e| specialise(e, path))?;
        self.watches.insert(key, 1);
        Ok(())
    }

    pub fn remove(&mut self, path: &Path, recursive: bool) {
        let key = (path.to_path_buf(), recursive);
        match self.watches.get_mut(&key) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                self.watches.remove(&key);
                // The directory may be gone already, which removed the watch with it.
                let _ = self.inner.unwatch(path);
            }
            None => {}
        }
    }

    /// Drops and re-adds a recursive watch (its directory was replaced in place).
    pub fn refresh(&mut self, path: &Path) -> Result<(), WatchError> {
        let _ = self.inner.unwatch(path);
        self.inner
            .watch(path, RecursiveMode::Recursive)
            .map_err(|e| specialise(e, path))
    }
}

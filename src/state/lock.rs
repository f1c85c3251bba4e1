//! The daemon's hold on its state directory (one daemon per state directory), and making the
//! directory.

use super::*;

/// The daemon's hold on its state directory: an exclusive `flock` on `state_dir/daemon.lock`,
/// released when the process ends however it ends. The file holds the pid, for the error a
/// second daemon prints.
#[derive(Debug)]
pub(crate) struct DaemonLock {
    _file: std::fs::File,
}

/// The lock file in the state directory.
pub(crate) const LOCK_FILE: &str = "daemon.lock";

impl DaemonLock {
    /// Takes the lock, or says which process holds it.
    pub(crate) fn acquire(dir: &Path) -> Result<DaemonLock, StateError> {
        use std::io::{Read, Seek, Write};
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        create_dir(dir)?;
        let lock_error = |error| StateError::Lock {
            dir: dir.to_path_buf(),
            error,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.join(LOCK_FILE))
            .map_err(lock_error)?;
        // SAFETY: flock on a file descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(lock_error(err));
            }
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(StateError::Locked {
                dir: dir.to_path_buf(),
                pid: text.lines().next().and_then(|l| l.trim().parse().ok()),
            });
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(lock_error)?;
        Ok(DaemonLock { _file: file })
    }

    /// Takes the lock of `dir` for a daemon whose state is in `elsewhere` (its rules now name
    /// `dir`, which takes effect at its next start): no other daemon starts on `dir` meanwhile,
    /// and `status` can say where the state is.
    pub(crate) fn reserve(dir: &Path, elsewhere: &Path) -> Result<DaemonLock, StateError> {
        use std::io::Write;
        let mut lock = DaemonLock::acquire(dir)?;
        writeln!(lock._file, "state: {}", elsewhere.display()).map_err(|error| StateError::Lock {
            dir: dir.to_path_buf(),
            error,
        })?;
        Ok(lock)
    }

    /// Whether a daemon holds `dir`'s lock now: its pid, and where its state is when that is
    /// another directory (see [`DaemonLock::reserve`]).
    pub(crate) fn holder(dir: &Path) -> Option<(Option<u32>, Option<PathBuf>)> {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let mut file = std::fs::File::open(dir.join(LOCK_FILE)).ok()?;
        // SAFETY: flock on a file descriptor this function owns; released when it is closed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0 {
            return None;
        }
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        let pid = text.lines().next().and_then(|l| l.trim().parse().ok());
        let elsewhere = text.lines().find_map(|l| l.strip_prefix("state: ")).map(PathBuf::from);
        Some((pid, elsewhere))
    }
}

/// Creates the state directory, readable by its owner only (it says which files a site has and
/// how its purges went), if it is not there yet.
pub(super) fn create_dir(dir: &Path) -> Result<(), StateError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|error| StateError::CreateDir {
            path: dir.to_path_buf(),
            error,
        })
}

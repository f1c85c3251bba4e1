//! Reading a file's bytes into a [`FileMeta`]: one open, one fstat, BLAKE3 over the contents —
//! within a [`Budget`], so that one big file never holds back a purge past `max_delay`, nor a
//! stop past `shutdown_timeout`.
//!
//! A file not hashed in time is [`Late`]: the comparison then judges it by its size and mtime
//! (a new or changed-by-metadata file is purged by its URL and recorded [`UNHASHED`]; one whose
//! metadata did not move is read again at the next batch).

use std::io;
use std::path::Path;
use std::time::Instant;

use crate::shutdown::Stop;

/// What reading a file yields, and what a rule's record keeps of it: its size, mtime and the
/// [`Digest`] of its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileMeta {
    pub size: u64,
    pub mtime_ns: i64,
    pub hash: crate::hashing::Digest,
}

impl FileMeta {
    /// Whether `new` holds the bytes this entry stands for: the same hash, or, for an entry
    /// recorded [`UNHASHED`] (purged by its metadata), the same size and mtime.
    pub fn same_bytes(&self, new: &FileMeta) -> bool {
        self.hash == new.hash || (self.hash == UNHASHED && self.size == new.size && self.mtime_ns == new.mtime_ns)
    }
}

/// A file's mtime in nanoseconds since the epoch.
pub fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt;
    meta.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec())
}

/// The hash recorded for a file purged by its metadata, before its bytes were read: a later
/// comparison that finds the same size and mtime takes the file as the one that was purged, and
/// records its real hash without purging it again.
pub const UNHASHED: Digest = [0; DIGEST_LEN];

/// How many bytes of a file's BLAKE3 hash are kept: 128 bits. Two different versions of a
/// page taking the same 16 bytes by chance is a 1-in-2^128 event (2^64 files before any two
/// collide at all); half the hash is half the record's memory on a host of a million files.
pub const DIGEST_LEN: usize = 16;

/// A file's bytes as recorded: the first [`DIGEST_LEN`] bytes of their BLAKE3 hash.
pub type Digest = [u8; DIGEST_LEN];

/// The [`Digest`] of what `hasher` has read.
pub fn digest(hasher: &blake3::Hasher) -> Digest {
    let mut out = [0; DIGEST_LEN];
    hasher.finalize_xof().fill(&mut out);
    out
}

/// The [`Digest`] of `bytes`.
pub fn digest_of(bytes: &[u8]) -> Digest {
    let mut h = blake3::Hasher::new();
    h.update(bytes);
    digest(&h)
}

/// Files up to this size are read whole, in one buffer.
pub(crate) const SMALL_FILE: u64 = 256 * 1024;

/// Bigger files are read in chunks of this size, the budget looked at between chunks.
const CHUNK: usize = 1024 * 1024;

/// How long a comparison may spend reading files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budget {
    /// Past this instant, files still to read are judged by their metadata. `None`: no limit
    /// of its own (a stop still ends it: see [`Stop::hashing_over`]).
    pub until: Option<Instant>,
    /// A stop asked for ends reading too, once its grace is over.
    pub stop: Stop,
}

impl Budget {
    /// No limit but the stop.
    pub const OPEN: Budget = Budget {
        until: None,
        stop: Stop::NEVER,
    };

    pub fn until(at: Instant) -> Budget {
        Budget {
            until: Some(at),
            stop: Stop::NEVER,
        }
    }

    /// The same budget, ended by `stop` too.
    pub fn stopped_by(self, stop: Stop) -> Budget {
        Budget { stop, ..self }
    }

    /// Whether reading must end now.
    pub fn over(&self) -> bool {
        self.until.is_some_and(|u| Instant::now() >= u) || self.stop.hashing_over()
    }
}

/// A file whose bytes were not read in time (or left for later: see [`hash_within`]), with
/// the metadata its open found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Late {
    pub size: u64,
    pub mtime_ns: i64,
}

impl std::fmt::Display for Late {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not hashed in time ({} bytes)", self.size)
    }
}

impl std::error::Error for Late {}

impl Late {
    /// The [`Late`] an error of [`hash_within`] carries, if it is one.
    pub fn of(e: &io::Error) -> Option<Late> {
        e.get_ref().and_then(|r| r.downcast_ref::<Late>()).copied()
    }

    /// The manifest entry for a file purged by its metadata.
    pub fn unhashed(self) -> FileMeta {
        FileMeta {
            size: self.size,
            mtime_ns: self.mtime_ns,
            hash: UNHASHED,
        }
    }
}

/// Stats and hashes one file: `None` when it is missing or not a regular file (a directory is
/// `Err` with `ErrorKind::IsADirectory`, so that callers can tell). Ends early only for a stop.
pub fn stat_and_hash(path: &Path) -> io::Result<Option<FileMeta>> {
    hash_within(path, Budget::OPEN, None)
}

/// [`stat_and_hash`] within `budget`: an error carrying [`Late`] when the budget ran out before
/// the last byte, or at once when the file is bigger than `max_len` (left for later).
pub fn hash_within(path: &Path, budget: Budget, max_len: Option<u64>) -> io::Result<Option<FileMeta>> {
    use std::io::Read;
    let mut file = match open_for_hashing(path) {
        Ok(f) => f,
        // Gone, or a parent is not a directory any more, or a symlink loop: no file there.
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if meta.is_dir() {
        return Err(io::Error::new(io::ErrorKind::IsADirectory, "directory"));
    }
    if !meta.is_file() {
        return Ok(None);
    }
    let late = || {
        io::Error::other(Late {
            size: meta.len(),
            mtime_ns: mtime_ns(&meta),
        })
    };
    if max_len.is_some_and(|m| meta.len() > m) {
        return Err(late());
    }
    let mut hasher = blake3::Hasher::new();
    let small = meta.len() <= SMALL_FILE;
    READ_BUF.with_borrow_mut(|buf| -> io::Result<()> {
        // A small file is read straight into one buffer (`read_to_end` would stat it again and
        // seek to learn what the fstat above said); a big one a chunk at a time, the budget
        // looked at between chunks.
        let want = if small { meta.len() as usize + 1 } else { CHUNK };
        buf.resize(want, 0);
        let mut n = 0;
        loop {
            match file.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => {
                    n += k;
                    if n < buf.len() {
                        continue;
                    }
                    if small {
                        // It grew since the fstat: keep reading.
                        buf.resize(n * 2, 0);
                    } else {
                        hasher.update(&buf[..n]);
                        n = 0;
                        if budget.over() {
                            return Err(late());
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        hasher.update(&buf[..n]);
        Ok(())
    })?;
    Ok(Some(FileMeta {
        size: meta.len(),
        mtime_ns: mtime_ns(&meta),
        hash: digest(&hasher),
    }))
}

/// Lists shorter than this are read on the calling thread alone.
const SPREAD_FROM: usize = 512;

/// Reads each of `paths` under `root` (a first baseline) on every core, keeping the regular
/// files that could be read. `None` when `stop` was asked for meanwhile.
pub fn hash_all(root: &Path, paths: Vec<String>, stop: Stop) -> Option<Vec<(String, FileMeta)>> {
    let all = std::sync::Mutex::new(Vec::with_capacity(paths.len()));
    let done = hash_spread(root, paths, usize::MAX, stop, |part| {
        all.lock().unwrap_or_else(|e| e.into_inner()).extend(part)
    });
    done.then(|| all.into_inner().unwrap_or_else(|e| e.into_inner()))
}

/// Reads each of `paths` under `root` on every core (on the calling thread alone for fewer
/// than [`SPREAD_FROM`]), handing the regular files read to `send` in parts of at most `part`.
/// Returns false when `stop` was asked for before every file was read.
pub(crate) fn hash_spread(
    root: &Path,
    mut paths: Vec<String>,
    part: usize,
    stop: Stop,
    send: impl Fn(Vec<(String, FileMeta)>) + Sync,
) -> bool {
    let threads = match paths.len() {
        n if n < SPREAD_FROM => 1,
        _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let share = paths.len().div_ceil(threads).max(1);
    // Each thread takes its share's paths out of the list: they move into the results, never
    // copied (nor is the list).
    let hash_share = |share: &mut [String]| -> bool {
        let mut out = Vec::with_capacity(share.len().min(part));
        for (i, rel) in share.iter_mut().enumerate() {
            if i % 1024 == 1023 && stop.requested() {
                return false;
            }
            let rel = std::mem::take(rel);
            if let Ok(Some(meta)) = stat_and_hash(&root.join(&rel)) {
                out.push((rel, meta));
            }
            if out.len() == part {
                send(std::mem::replace(&mut out, Vec::with_capacity(part)));
            }
        }
        if !out.is_empty() {
            send(out);
        }
        true
    };
    if threads == 1 {
        return hash_share(&mut paths);
    }
    let hash_share = &hash_share;
    std::thread::scope(|s| {
        let handles: Vec<_> = paths
            .chunks_mut(share)
            .map(|part| s.spawn(move || hash_share(part)))
            .collect();
        handles.into_iter().all(|h| h.join().unwrap_or(false))
    })
}

thread_local! {
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Set once the kernel refused `O_NOATIME` (files owned by another user, without CAP_FOWNER).
static NOATIME_REFUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Opens a file to hash it: one open and an fstat, not a stat and an open (each path lookup
/// costs). `O_NONBLOCK` so that a FIFO in the tree does not block the open (it is then seen not
/// to be a regular file); `O_NOATIME` where the kernel allows it, so that reading a freshly
/// deployed tree does not dirty (and journal) every inode in it for its access time.
fn open_for_hashing(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::atomic::Ordering::Relaxed;
    let open = |flags| {
        std::fs::File::options()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | flags)
            .open(path)
    };
    if !NOATIME_REFUSED.load(Relaxed) {
        match open(libc::O_NOATIME) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => NOATIME_REFUSED.store(true, Relaxed),
            other => return other,
        }
    }
    open(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::time::{Duration, SystemTime};

    #[test]
    fn hashing_looks_only_at_regular_files_and_does_not_block_on_a_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join("a.html"), "abc").unwrap();
        let meta = stat_and_hash(&root.join("a.html")).unwrap().unwrap();
        assert_eq!(meta.size, 3);
        assert_eq!(meta.hash, digest_of(b"abc"));
        assert!(stat_and_hash(&root.join("missing")).unwrap().is_none());
        assert!(stat_and_hash(&root.join("a.html/x")).unwrap().is_none());
        assert_eq!(stat_and_hash(root).unwrap_err().kind(), io::ErrorKind::IsADirectory);
        let made = std::process::Command::new("mkfifo")
            .arg(root.join("pipe"))
            .status()
            .unwrap();
        assert!(made.success());
        assert!(stat_and_hash(&root.join("pipe")).unwrap().is_none());
    }

    #[test]
    fn hashing_reads_every_size_whole() {
        let dir = tempfile::tempdir().unwrap();
        // Empty, small, a buffer left bigger by the previous file, and past the one-read limit.
        for len in [0usize, 5, 2, SMALL_FILE as usize + 4096, 3] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let p = dir.path().join(format!("f{len}"));
            fs::write(&p, &bytes).unwrap();
            let meta = stat_and_hash(&p).unwrap().unwrap();
            assert_eq!(meta.size, len as u64);
            assert_eq!(meta.hash, digest_of(&bytes), "{len} bytes");
        }
    }

    #[test]
    fn hashing_leaves_the_access_time_alone() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.html");
        fs::write(&p, "abc").unwrap();
        // An access time older than the last write: reading would update it (relatime).
        let old = SystemTime::now() - Duration::from_secs(3600);
        let f = fs::File::options().write(true).open(&p).unwrap();
        f.set_times(fs::FileTimes::new().set_accessed(old)).unwrap();
        drop(f);
        let before = fs::metadata(&p).unwrap().accessed().unwrap();
        stat_and_hash(&p).unwrap().unwrap();
        assert_eq!(fs::metadata(&p).unwrap().accessed().unwrap(), before);
    }

    /// A big file (sparse: 4 GiB of holes read at memory speed, still seconds of hashing) is
    /// given up on once the budget is spent, with the metadata its open found; one past
    /// `max_len` is not read at all.
    #[test]
    fn a_big_file_is_given_up_on_when_the_budget_runs_out() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.bin");
        let f = fs::File::create(&p).unwrap();
        f.set_len(4 << 30).unwrap();
        drop(f);
        let started = Instant::now();
        let e = hash_within(&p, Budget::until(Instant::now() + Duration::from_millis(50)), None).unwrap_err();
        let late = Late::of(&e).expect("late");
        assert_eq!(late.size, 4 << 30);
        assert_eq!(late.mtime_ns, mtime_ns(&fs::metadata(&p).unwrap()));
        assert_eq!(late.unhashed().hash, UNHASHED);
        assert!(started.elapsed() < Duration::from_secs(60));
        let e = hash_within(&p, Budget::OPEN, Some(1 << 20)).unwrap_err();
        assert_eq!(Late::of(&e), Some(late));
        // A small file is hashed whatever the budget says: it takes one read.
        fs::write(dir.path().join("a.html"), "abc").unwrap();
        let spent = Budget::until(Instant::now() - Duration::from_secs(1));
        let m = hash_within(&dir.path().join("a.html"), spent, Some(1)).unwrap_err();
        assert!(Late::of(&m).is_some(), "bigger than max_len");
        let m = hash_within(&dir.path().join("a.html"), spent, None).unwrap().unwrap();
        assert_eq!(m.hash, digest_of(b"abc"));
    }
}

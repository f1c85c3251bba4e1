//! The state directory: manifests, pending purges and purge results, in one SQLite database.
//!
//! SQLite (bundled, WAL mode, `synchronous=FULL`) rather than redb: `purgewatch status` and
//! `purgewatch plan` read the state while the daemon writes it, and redb takes an exclusive lock
//! per process. Every write that matters is one transaction: the files a settle found changed go
//! into `pending` for each target *and* the manifest moves forward, or neither happens, so a
//! crash at any point either replays the change from `pending` or finds it again by diffing the
//! tree against the old manifest. Nothing secret is stored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::clock::now_ms;
use crate::manifest::{FileMeta, Manifest};
use crate::request::ChangeKind;
use crate::request::PendingFile;

mod history;
mod lock;
mod writer;

pub(crate) use lock::DaemonLock;
use lock::create_dir;
pub(crate) use writer::{PurgeId, Writer};

/// Bumped on every incompatible schema change.
pub(crate) const SCHEMA_VERSION: i64 = 1;
pub(crate) const DB_FILE: &str = "state.sqlite3";
/// Purge results kept per target.
const HISTORY: i64 = 50;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    // The causes are named `error`, not `source`: each message already says what the OS or SQLite
    // said, and a `source()` would print it a second time in the chain `main` prints.
    #[error("state directory {}: cannot create it: {error} (set `state_dir:` in the rules file, or StateDirectory= in the unit)", path.display())]
    CreateDir { path: PathBuf, error: std::io::Error },
    #[error("state file {}: {error}", path.display())]
    Open { path: PathBuf, error: rusqlite::Error },
    #[error(
        "state file {} was written by a newer purgewatch (schema {found}, this one reads {SCHEMA_VERSION}): upgrade purgewatch, or move the file away to start over with a new baseline",
        path.display()
    )]
    Newer { path: PathBuf, found: i64 },
    #[error(
        "state file {} is not a purgewatch state file or is damaged ({reason}): move it away to start over with a new baseline",
        path.display()
    )]
    Broken { path: PathBuf, reason: String },
    #[error("state file {}: {reason}", path.display())]
    Unusable { path: PathBuf, reason: String },
    #[error(
        "another purgewatch{} is running on the state directory {}: stop it first, or give this one its own `state_dir:` (two daemons would send every purge twice)",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        dir.display()
    )]
    Locked { dir: PathBuf, pid: Option<u32> },
    #[error("state directory {}: cannot take the daemon's lock: {error}", dir.display())]
    Lock { dir: PathBuf, error: std::io::Error },
    #[error("state file: {0}")]
    Sql(rusqlite::Error),
}

/// What a SQLite error at opening means for the person who has to act on it: only a file that
/// is not a database, or a damaged one, is "move it away"; a full disk, a read-only filesystem
/// or a permission problem leaves the file (and the work pending in it) as it is.
fn open_error(path: &Path, e: rusqlite::Error) -> StateError {
    use rusqlite::ErrorCode;
    let code = match &e {
        rusqlite::Error::SqliteFailure(f, _) => Some(f.code),
        _ => None,
    };
    // SQLite often reports a full disk as a plain I/O error (it could not grow the -shm or -wal
    // file): ask the filesystem.
    let fs = path.parent().and_then(filesystem_state);
    let reason = match code {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            return StateError::Broken {
                path: path.to_path_buf(),
                reason: e.to_string(),
            };
        }
        _ if fs == Some(FsState::Full) || code == Some(ErrorCode::DiskFull) => {
            "the disk is full: free some space there and start again (the state file is intact; do not move it away, it holds pending purges)".to_string()
        }
        _ if fs == Some(FsState::ReadOnly) || code == Some(ErrorCode::ReadOnly) => {
            "the file or its filesystem is read-only: purgewatch must write there (check the mount, ReadWritePaths= or StateDirectory= in the unit)".to_string()
        }
        Some(ErrorCode::PermissionDenied | ErrorCode::CannotOpen) => format!(
            "permission denied or cannot open ({e}): the user purgewatch runs as must own the state directory and file"
        ),
        _ => e.to_string(),
    };
    StateError::Unusable {
        path: path.to_path_buf(),
        reason,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FsState {
    Full,
    ReadOnly,
    Fine,
}

/// Whether the filesystem holding `dir` is full or mounted read-only.
fn filesystem_state(dir: &Path) -> Option<FsState> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a statvfs buffer this function owns.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(if st.f_flag & libc::ST_RDONLY != 0 {
        FsState::ReadOnly
    } else if st.f_bavail == 0 {
        FsState::Full
    } else {
        FsState::Fine
    })
}

impl From<rusqlite::Error> for StateError {
    fn from(e: rusqlite::Error) -> Self {
        StateError::Sql(e)
    }
}

/// A pending file with the order it was queued in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PendingRow {
    pub target: String,
    pub file: PendingFile,
    pub first_seen_ms: i64,
    pub seq: i64,
}

/// Where the purge history goes: the state file itself (`purgewatch purge`), or the daemon's
/// [`Writer`], which writes it on its own thread.
pub(crate) trait PurgeLog {
    /// What names a purge recorded, for its job's end.
    type Id;
    fn record_purge(&mut self, rec: &PurgeRecord) -> Result<Self::Id, StateError>;
    fn update_job(&mut self, id: Self::Id, state: &str, message: Option<&str>) -> Result<(), StateError>;
}

impl PurgeLog for Store {
    type Id = i64;

    fn record_purge(&mut self, rec: &PurgeRecord) -> Result<i64, StateError> {
        Store::record_purge(self, rec)
    }

    fn update_job(&mut self, id: i64, state: &str, message: Option<&str>) -> Result<(), StateError> {
        Store::update_job(self, id, state, message)
    }
}

/// One purge sent (or given up on) for a target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PurgeRecord {
    pub id: i64,
    pub target: String,
    pub at_ms: i64,
    pub files: i64,
    pub request: String,
    /// `accepted`, `failed` or `dry-run`.
    pub result: String,
    pub job_id: Option<String>,
    /// The provider job's state once known (`Completed`, `SUCCESS`, `FAILURE`, ...).
    pub job_state: Option<String>,
    pub message: Option<String>,
}

/// How the last check of what the edge serves went, for a target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct VerifyRecord {
    pub target: String,
    pub at_ms: i64,
    pub checked: i64,
    pub fresh: i64,
    pub stale: i64,
    pub unreachable: i64,
    /// The stale URLs, or why the edge could not be asked.
    pub detail: Option<String>,
}

/// A purge on its way to a target, as the daemon sending it last said: since when, for how many
/// files, and the retry it is at (0: the first try) with the error that made it retry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Sending {
    pub since_ms: i64,
    pub files: i64,
    pub attempt: i64,
    pub error: Option<String>,
}

/// Tables added after schema 1 was released: created where missing, so that an older
/// purgewatch still opens the file (it ignores them).
const ADDED: &str = "
CREATE TABLE IF NOT EXISTS verifications (target TEXT PRIMARY KEY, at_ms INTEGER NOT NULL,
    checked INTEGER NOT NULL, fresh INTEGER NOT NULL, stale INTEGER NOT NULL,
    unreachable INTEGER NOT NULL, detail TEXT);
CREATE TABLE IF NOT EXISTS warnings (topic TEXT PRIMARY KEY, message TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sending (target TEXT PRIMARY KEY, since_ms INTEGER NOT NULL,
    files INTEGER NOT NULL, attempt INTEGER NOT NULL, error TEXT);
";

pub(crate) struct Store {
    conn: Connection,
    path: PathBuf,
    /// The file's (device, inode) when it was opened, to notice it being deleted or replaced.
    id: Option<(u64, u64)>,
}

fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

const SCHEMA: &str = "
CREATE TABLE rules (rule TEXT PRIMARY KEY, root TEXT NOT NULL, baseline_ms INTEGER NOT NULL);
CREATE TABLE manifest (
    rule TEXT NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, hash BLOB NOT NULL,
    PRIMARY KEY (rule, path)) WITHOUT ROWID;
CREATE TABLE pending (
    target TEXT NOT NULL, rule TEXT NOT NULL, path TEXT NOT NULL, kind TEXT NOT NULL,
    first_seen_ms INTEGER NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (target, rule, path)) WITHOUT ROWID;
CREATE TABLE purges (
    id INTEGER PRIMARY KEY AUTOINCREMENT, target TEXT NOT NULL, at_ms INTEGER NOT NULL, files INTEGER NOT NULL,
    request TEXT NOT NULL, result TEXT NOT NULL, job_id TEXT, job_state TEXT, message TEXT);
CREATE INDEX purges_by_target ON purges (target, id);
CREATE TABLE seen (rule TEXT NOT NULL, path TEXT NOT NULL, first_seen_ms INTEGER NOT NULL,
    PRIMARY KEY (rule, path)) WITHOUT ROWID;
";

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    pub(crate) fn open(dir: &Path) -> Result<Store, StateError> {
        use std::os::unix::fs::OpenOptionsExt;
        create_dir(dir)?;
        let path = dir.join(DB_FILE);
        // Created 0600 before SQLite opens it (SQLite gives its -wal and -shm files the same
        // mode); an existing file keeps the mode its owner gave it.
        if !path.exists() {
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path);
        }
        let conn = Connection::open(&path).map_err(|e| open_error(&path, e))?;
        Store::init(conn, path, true)
    }

    /// Opens an existing store without writing to it; `None` when there is none yet.
    pub(crate) fn open_read_only(dir: &Path) -> Result<Option<Store>, StateError> {
        let path = dir.join(DB_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|error| StateError::Open {
            path: path.clone(),
            error,
        })?;
        Store::init(conn, path, false).map(Some)
    }

    fn init(conn: Connection, path: PathBuf, writable: bool) -> Result<Store, StateError> {
        let broken = |e: rusqlite::Error| open_error(&path, e);
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(broken)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(broken)?;
        if version > SCHEMA_VERSION {
            return Err(StateError::Newer { path, found: version });
        }
        if writable {
            conn.pragma_update(None, "journal_mode", "WAL").map_err(broken)?;
            conn.pragma_update(None, "synchronous", "FULL").map_err(broken)?;
            if version == 0 {
                let tables: i64 = conn
                    .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
                    .map_err(broken)?;
                if tables > 0 {
                    return Err(StateError::Broken {
                        path,
                        reason: "it has tables but no purgewatch schema version".into(),
                    });
                }
                conn.execute_batch(&format!(
                    "BEGIN; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
                ))
                .map_err(broken)?;
            }
            conn.execute_batch(ADDED).map_err(broken)?;
        } else if version == 0 {
            return Err(StateError::Broken {
                path,
                reason: "no purgewatch schema version".into(),
            });
        }
        let id = file_id(&path);
        Ok(Store { conn, path, id })
    }

    /// True when the file this store writes to is no longer at its path (deleted, or replaced
    /// by another file): what is written would go to a file nobody will read again.
    pub(crate) fn is_gone(&self) -> bool {
        file_id(&self.path) != self.id
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The watched root recorded for `rule`, if it has a baseline.
    pub(crate) fn rule_root(&self, rule: &str) -> Result<Option<String>, StateError> {
        Ok(self
            .conn
            .query_row("SELECT root FROM rules WHERE rule = ?1", [rule], |r| r.get(0))
            .optional()?)
    }

    pub(crate) fn load_manifest(&self, rule: &str) -> Result<Manifest, StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT path, size, mtime_ns, hash FROM manifest WHERE rule = ?1")?;
        let rows = stmt.query_map([rule], |r| {
            let hash: Vec<u8> = r.get(3)?;
            // Earlier versions kept the whole 32-byte hash: its first bytes are the digest.
            let mut h = crate::hashing::UNHASHED;
            if let Some(digest) = hash.get(..h.len()) {
                h.copy_from_slice(digest);
            }
            Ok((
                r.get::<_, String>(0)?,
                FileMeta {
                    size: r.get::<_, i64>(1)? as u64,
                    mtime_ns: r.get(2)?,
                    hash: h,
                },
            ))
        })?;
        let entries: Result<Vec<_>, _> = rows.collect();
        Ok(Manifest::from_entries(entries?))
    }

    /// Replaces `rule`'s manifest with `manifest` (a new baseline).
    pub(crate) fn set_baseline(&mut self, rule: &str, root: &str, manifest: &Manifest) -> Result<(), StateError> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM manifest WHERE rule = ?1", [rule])?;
        tx.execute(
            "INSERT INTO rules (rule, root, baseline_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (rule) DO UPDATE SET root = excluded.root, baseline_ms = excluded.baseline_ms",
            params![rule, root, now_ms()],
        )?;
        {
            let mut ins =
                tx.prepare("INSERT INTO manifest (rule, path, size, mtime_ns, hash) VALUES (?1, ?2, ?3, ?4, ?5)")?;
            for (path, m) in manifest.iter() {
                ins.execute(params![rule, path, m.size as i64, m.mtime_ns, &m.hash[..]])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Records paths that produced events and are not compared yet (`rule`, `path`), each with
    /// the time of its newest record (the column keeps its first name): a comparison forgets
    /// only the paths recorded before it began ([`Store::forget_seen`]).
    pub(crate) fn record_seen(&mut self, paths: &[(String, String)], now_ms: i64) -> Result<(), StateError> {
        let tx = self.conn.transaction()?;
        {
            let mut ins = tx.prepare(
                "INSERT INTO seen (rule, path, first_seen_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (rule, path) DO UPDATE SET first_seen_ms = max(first_seen_ms, excluded.first_seen_ms)",
            )?;
            for (rule, path) in paths {
                ins.execute(params![rule, path, now_ms])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Forgets up to `limit` of `rule`'s seen paths recorded at or before `up_to_ms` (a
    /// comparison that began after that has dealt with them). Returns how many went.
    pub(crate) fn forget_seen(&mut self, rule: &str, up_to_ms: i64, limit: usize) -> Result<usize, StateError> {
        let limit = i64::try_from(limit).unwrap_or(-1);
        Ok(self.conn.execute(
            "DELETE FROM seen WHERE (rule, path) IN
               (SELECT rule, path FROM seen WHERE rule = ?1 AND first_seen_ms <= ?2 LIMIT ?3)",
            params![rule, up_to_ms, limit],
        )?)
    }

    /// Paths seen but not yet compared: (rule, path, when last recorded).
    pub(crate) fn seen(&self) -> Result<Vec<(String, String, i64)>, StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT rule, path, first_seen_ms FROM seen ORDER BY rule, path")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// In one transaction: queue `rows` (their seq and first-seen time are the caller's; a row
    /// already queued for the same target and file keeps its first-seen time), move `rule`'s
    /// manifest forward. The rule's seen paths are forgotten later, a chunk at a time
    /// ([`Store::forget_seen`]): after a storm there are 100,000 of them, and a crash before they
    /// are gone only costs hashing them again at the next start.
    pub(crate) fn commit_changes(
        &mut self,
        rule: &str,
        updates: &[(String, Option<FileMeta>)],
        rows: &[PendingRow],
    ) -> Result<(), StateError> {
        let tx = self.conn.transaction()?;
        write_manifest(&tx, rule, updates)?;
        {
            let mut pend = tx.prepare(
                "INSERT INTO pending (target, rule, path, kind, first_seen_ms, seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (target, rule, path) DO UPDATE SET kind = excluded.kind, seq = excluded.seq",
            )?;
            for r in rows {
                let f = &r.file;
                pend.execute(params![
                    r.target,
                    f.rule,
                    f.path,
                    f.kind.as_str(),
                    r.first_seen_ms,
                    r.seq
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Writes manifest entries on their own (new metadata for files whose bytes did not change).
    pub(crate) fn update_manifest(
        &mut self,
        rule: &str,
        updates: &[(String, Option<FileMeta>)],
    ) -> Result<(), StateError> {
        let tx = self.conn.transaction()?;
        write_manifest(&tx, rule, updates)?;
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn pending(&self) -> Result<Vec<PendingRow>, StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT target, rule, path, kind, first_seen_ms, seq FROM pending ORDER BY target, seq")?;
        let rows = stmt.query_map([], |r| {
            let kind: String = r.get(3)?;
            Ok(PendingRow {
                target: r.get(0)?,
                file: PendingFile {
                    rule: r.get(1)?,
                    path: r.get(2)?,
                    kind: parse_kind(&kind),
                },
                first_seen_ms: r.get(4)?,
                seq: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Removes `target`'s pending rows queued at or before `seq` (a newer change stays).
    pub(crate) fn clear_pending(&mut self, target: &str, seq: i64) -> Result<usize, StateError> {
        Ok(self.conn.execute(
            "DELETE FROM pending WHERE target = ?1 AND seq <= ?2",
            params![target, seq],
        )?)
    }
}

/// Upserts (or, for `None`, deletes) `rule`'s manifest entries inside a transaction.
fn write_manifest(
    tx: &rusqlite::Transaction,
    rule: &str,
    updates: &[(String, Option<FileMeta>)],
) -> rusqlite::Result<()> {
    let mut up = tx.prepare_cached(
        "INSERT INTO manifest (rule, path, size, mtime_ns, hash) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (rule, path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns, hash = excluded.hash",
    )?;
    let mut del = tx.prepare_cached("DELETE FROM manifest WHERE rule = ?1 AND path = ?2")?;
    for (path, meta) in updates {
        match meta {
            Some(m) => up.execute(params![rule, path, m.size as i64, m.mtime_ns, &m.hash[..]])?,
            None => del.execute(params![rule, path])?,
        };
    }
    Ok(())
}

fn parse_kind(s: &str) -> ChangeKind {
    match s {
        "created" => ChangeKind::Created,
        "deleted" => ChangeKind::Deleted,
        _ => ChangeKind::Modified,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> PendingFile {
        PendingFile {
            rule: "site".into(),
            path: path.into(),
            kind: ChangeKind::Modified,
        }
    }

    #[test]
    fn changes_and_manifest_move_together_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let meta = FileMeta {
            size: 3,
            mtime_ns: 7,
            hash: [1; 16],
        };
        {
            let mut s = Store::open(dir.path()).unwrap();
            s.set_baseline("site", "/w", &Manifest::from_entries([("a.html".to_string(), meta)]))
                .unwrap();
            let row = |target: &str, seq, first_seen_ms| PendingRow {
                target: target.into(),
                file: file("b.html"),
                first_seen_ms,
                seq,
            };
            let rows = vec![row("cdn", 1, 1000), row("www", 2, 1000)];
            s.commit_changes("site", &[("b.html".into(), Some(meta))], &rows)
                .unwrap();
            // A second change to the same file keeps its first-seen time and takes the newer seq.
            s.commit_changes("site", &[], &[row("cdn", 3, 2000)]).unwrap();
            let cdn: Vec<PendingRow> = s.pending().unwrap().into_iter().filter(|r| r.target == "cdn").collect();
            assert_eq!((cdn.len(), cdn[0].first_seen_ms, cdn[0].seq), (1, 1000, 3));
            assert_eq!(
                s.clear_pending("cdn", rows[0].seq).unwrap(),
                0,
                "newer change must stay"
            );
        }
        let mut s = Store::open(dir.path()).unwrap();
        assert_eq!(s.rule_root("site").unwrap().as_deref(), Some("/w"));
        assert_eq!(s.load_manifest("site").unwrap().len(), 2);
        assert_eq!(s.pending().unwrap().len(), 2);
        let max = s.pending().unwrap().iter().map(|r| r.seq).max().unwrap();
        s.clear_pending("cdn", max).unwrap();
        assert_eq!(s.pending().unwrap().len(), 1);
        let ro = Store::open_read_only(dir.path()).unwrap().unwrap();
        assert_eq!(ro.pending().unwrap()[0].target, "www");
        s.record_seen(
            &[("site".into(), "c.html".into()), ("other".into(), "d.html".into())],
            5,
        )
        .unwrap();
        s.record_seen(&[("site".into(), "c.html".into())], 9).unwrap();
        assert_eq!(
            ro.seen().unwrap()[1],
            ("site".into(), "c.html".into(), 9),
            "the newest record"
        );
        s.record_seen(&[("site".into(), "e.html".into())], 7).unwrap();
        s.commit_changes("site", &[], &[]).unwrap();
        assert_eq!(s.seen().unwrap().len(), 3, "a commit leaves the seen paths");
        // A comparison that began at 8 forgets what was recorded by then, one chunk at a time,
        // and only for its rule: c.html was seen again at 9.
        assert_eq!(s.forget_seen("site", 8, 1).unwrap(), 1);
        assert_eq!(s.forget_seen("site", 8, 10).unwrap(), 0);
        let left: Vec<String> = s
            .seen()
            .unwrap()
            .into_iter()
            .map(|(r, p, _)| format!("{r}/{p}"))
            .collect();
        assert_eq!(left, ["other/d.html", "site/c.html"]);
    }

    #[test]
    fn purge_history_is_bounded_and_last_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        for i in 0..(HISTORY + 10) {
            let id = s
                .record_purge(&PurgeRecord {
                    target: "cdn".into(),
                    at_ms: i,
                    files: 1,
                    request: "p".into(),
                    result: "accepted".into(),
                    ..Default::default()
                })
                .unwrap();
            s.update_job(id, "SUCCESS", None).unwrap();
        }
        let last = s.last_purges().unwrap();
        assert_eq!(last["cdn"].at_ms, HISTORY + 9);
        assert_eq!(last["cdn"].job_state.as_deref(), Some("SUCCESS"));
        let n: i64 = s
            .conn
            .query_row("SELECT count(*) FROM purges", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, HISTORY);
    }

    #[test]
    fn newer_or_broken_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.conn.pragma_update(None, "user_version", 99).unwrap();
        }
        let err = Store::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("newer purgewatch"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(DB_FILE),
            "this is not a database, just some text that is long enough",
        )
        .unwrap();
        let err = Store::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("not a purgewatch state file or is damaged"), "{err}");
        // The file is left alone.
        assert!(
            std::fs::read_to_string(dir.path().join(DB_FILE))
                .unwrap()
                .starts_with("this is not")
        );
    }
}

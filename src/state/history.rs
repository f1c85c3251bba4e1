//! What was sent and how it went: the purge history, provider jobs, verifications, the send
//! under way and its retries, and warnings for `status`.

use super::*;

/// Rows keyed by their target (the last row of a target wins).
pub(super) fn by_target<T>(
    rows: impl Iterator<Item = rusqlite::Result<T>>,
    target: impl Fn(&T) -> &String,
) -> Result<BTreeMap<String, T>, StateError> {
    let mut out = BTreeMap::new();
    for rec in rows {
        let rec = rec?;
        out.insert(target(&rec).clone(), rec);
    }
    Ok(out)
}

impl Store {
    pub(crate) fn record_purge(&mut self, rec: &PurgeRecord) -> Result<i64, StateError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO purges (target, at_ms, files, request, result, job_id, job_state, message)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                rec.target,
                rec.at_ms,
                rec.files,
                rec.request,
                rec.result,
                rec.job_id,
                rec.job_state,
                rec.message
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "DELETE FROM purges WHERE target = ?1 AND id <= (SELECT id FROM purges WHERE target = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            params![rec.target, HISTORY],
        )?;
        tx.commit()?;
        Ok(id)
    }

    pub(crate) fn update_job(&mut self, id: i64, state: &str, message: Option<&str>) -> Result<(), StateError> {
        self.conn.execute(
            "UPDATE purges SET job_state = ?2, message = coalesce(?3, message) WHERE id = ?1",
            params![id, state, message],
        )?;
        Ok(())
    }

    /// Records how the last verification for `v.target` went (one row per target).
    pub(crate) fn record_verification(&mut self, v: &VerifyRecord) -> Result<(), StateError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO verifications (target, at_ms, checked, fresh, stale, unreachable, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![v.target, v.at_ms, v.checked, v.fresh, v.stale, v.unreachable, v.detail],
        )?;
        Ok(())
    }

    /// Notes that a purge of `files` files is on its way to `target` since `since_ms` (`attempt`
    /// 0), or is being retried after `error`.
    pub(crate) fn set_sending(&mut self, target: &str, s: &Sending) -> Result<(), StateError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO sending (target, since_ms, files, attempt, error) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![target, s.since_ms, s.files, s.attempt, s.error],
        )?;
        Ok(())
    }

    /// Records the running daemon's warning on `topic` (`None`: there is none now).
    pub(crate) fn set_warning(&mut self, topic: &str, message: Option<&str>) -> Result<(), StateError> {
        match message {
            Some(m) => self.conn.execute(
                "INSERT OR REPLACE INTO warnings (topic, message) VALUES (?1, ?2)",
                params![topic, m],
            )?,
            None => self
                .conn
                .execute("DELETE FROM warnings WHERE topic = ?1", params![topic])?,
        };
        Ok(())
    }

    /// The running daemon's warnings (none in a state file from before them).
    pub(crate) fn warnings(&self) -> Result<Vec<String>, StateError> {
        let Ok(mut stmt) = self.conn.prepare("SELECT message FROM warnings ORDER BY topic") else {
            return Ok(Vec::new());
        };
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The purge on its way to `target` is being retried (retry `attempt`) after `error`.
    pub(crate) fn retrying(&mut self, target: &str, attempt: u32, error: &str) -> Result<(), StateError> {
        self.conn.execute(
            "UPDATE sending SET attempt = ?2, error = ?3 WHERE target = ?1",
            params![target, attempt, error],
        )?;
        Ok(())
    }

    /// The purge to `target` has ended (`None`: every target, at a daemon's start).
    pub(crate) fn clear_sending(&mut self, target: Option<&str>) -> Result<(), StateError> {
        match target {
            Some(t) => self.conn.execute("DELETE FROM sending WHERE target = ?1", params![t])?,
            None => self.conn.execute("DELETE FROM sending", [])?,
        };
        Ok(())
    }

    /// The purges on their way, per target (none in a state file from before this record).
    pub(crate) fn sending(&self) -> Result<BTreeMap<String, Sending>, StateError> {
        let Ok(mut stmt) = self
            .conn
            .prepare("SELECT target, since_ms, files, attempt, error FROM sending")
        else {
            return Ok(BTreeMap::new());
        };
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Sending {
                    since_ms: r.get(1)?,
                    files: r.get(2)?,
                    attempt: r.get(3)?,
                    error: r.get(4)?,
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The last verification of each target (none in a state file from before verification).
    pub(crate) fn last_verifications(&self) -> Result<BTreeMap<String, VerifyRecord>, StateError> {
        let Ok(mut stmt) = self
            .conn
            .prepare("SELECT target, at_ms, checked, fresh, stale, unreachable, detail FROM verifications")
        else {
            return Ok(BTreeMap::new());
        };
        let rows = stmt.query_map([], |r| {
            Ok(VerifyRecord {
                target: r.get(0)?,
                at_ms: r.get(1)?,
                checked: r.get(2)?,
                fresh: r.get(3)?,
                stale: r.get(4)?,
                unreachable: r.get(5)?,
                detail: r.get(6)?,
            })
        })?;
        by_target(rows, |r| &r.target)
    }

    /// What was asked of `target` in requests the provider accepted since `since_ms`.
    pub(crate) fn accepted_since(&self, target: &str, since_ms: i64) -> Result<Vec<String>, StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT request FROM purges WHERE target = ?1 AND at_ms >= ?2 AND result = 'accepted'")?;
        let rows = stmt.query_map(rusqlite::params![target, since_ms], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The last purge of each target.
    pub(crate) fn last_purges(&self) -> Result<BTreeMap<String, PurgeRecord>, StateError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, target, at_ms, files, request, result, job_id, job_state, message FROM purges
             WHERE id IN (SELECT max(id) FROM purges GROUP BY target)",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(PurgeRecord {
                id: r.get(0)?,
                target: r.get(1)?,
                at_ms: r.get(2)?,
                files: r.get(3)?,
                request: r.get(4)?,
                result: r.get(5)?,
                job_id: r.get(6)?,
                job_state: r.get(7)?,
                message: r.get(8)?,
            })
        })?;
        by_target(rows, |r| &r.target)
    }
}

//! `on_failure`: a command run (no shell) when a purge fails for good or a provider job ends in
//! failure, so that someone is told.
//!
//! It gets `PURGEWATCH_TARGET`, `PURGEWATCH_REQUEST`, `PURGEWATCH_ERROR` (scrubbed of secrets, as
//! every provider message is), `PURGEWATCH_FILES` (a count) and `PURGEWATCH_URLS` (the first 50,
//! one a line), and the daemon's own environment less every variable whose value holds a
//! configured secret (the `${VAR}` the rules file read a key or token from) and systemd's
//! per-process variables (`NOTIFY_SOCKET`, `WATCHDOG_*`, `LISTEN_*`). It runs at most once per
//! target per [`MIN_GAP`] (the failures skipped meanwhile are counted in the log), for at most
//! [`TIME_LIMIT`]; its exit status and stderr are logged.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use tokio::time::Instant;

use crate::secret::Secret;

/// A hook runs at most once per target in this time.
pub(crate) const MIN_GAP: Duration = Duration::from_secs(60);
/// A hook still running after this is killed.
pub(crate) const TIME_LIMIT: Duration = Duration::from_secs(10);
/// URLs passed in `PURGEWATCH_URLS`, at most.
pub(crate) const MAX_URLS: usize = 50;
/// systemd's variables meant for the daemon alone.
const NOT_INHERITED: &[&str] = &[
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
];

/// The daemon's environment as a hook gets it: without systemd's per-process variables and
/// without any variable whose value holds one of `secrets`.
pub(crate) fn inherited_env(secrets: &[Secret]) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    std::env::vars_os()
        .filter(|(k, v)| {
            let key = k.to_string_lossy();
            let value = v.to_string_lossy();
            !NOT_INHERITED.contains(&key.as_ref())
                && !secrets
                    .iter()
                    .any(|s| !s.expose().is_empty() && value.contains(s.expose()))
        })
        .collect()
}

/// What failed.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    pub target: String,
    /// The request, as the log lines describe it.
    pub request: String,
    pub error: String,
    pub files: usize,
    pub urls: Vec<String>,
}

impl Failure {
    /// The hook's environment (besides what it inherits).
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        let urls: Vec<&str> = self.urls.iter().take(MAX_URLS).map(String::as_str).collect();
        vec![
            ("PURGEWATCH_TARGET", self.target.clone()),
            ("PURGEWATCH_REQUEST", self.request.clone()),
            ("PURGEWATCH_ERROR", self.error.clone()),
            ("PURGEWATCH_FILES", self.files.to_string()),
            // One URL a line: a newline inside a name is escaped, never a line of its own.
            (
                "PURGEWATCH_URLS",
                urls.iter()
                    .map(|u| crate::logging::printable(u))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
        ]
    }
}

/// When each target's hook last ran, and how many failures were not told since.
#[derive(Debug, Default)]
pub(crate) struct Hooks {
    last: HashMap<String, Instant>,
    skipped: HashMap<String, u64>,
}

impl Hooks {
    /// Runs `argv` for `failure` on a task of its own, unless the target's hook ran less than
    /// [`MIN_GAP`] ago. Returns whether it was started.
    pub(crate) fn fire(&mut self, argv: &[String], failure: Failure, secrets: &[Secret]) -> bool {
        let now = Instant::now();
        let target = failure.target.clone();
        if self.last.get(&target).is_some_and(|t| now < *t + MIN_GAP) {
            let n = self.skipped.entry(target.clone()).or_default();
            *n += 1;
            tracing::info!(target = %target, skipped = *n, "on_failure not run: it ran less than a minute ago for this target");
            return false;
        }
        self.last.insert(target.clone(), now);
        if let Some(n) = self.skipped.remove(&target) {
            tracing::info!(target = %target, "on_failure: {n} failure(s) in the last minute were not told (one run per minute)");
        }
        let (argv, env) = (argv.to_vec(), inherited_env(secrets));
        tokio::spawn(async move { run(&argv, &failure, env).await });
        true
    }
}

/// What is kept of a hook's standard error, at most (the rest is read and thrown away).
pub(crate) const STDERR_LIMIT: usize = 64 * 1024;
/// After the hook exits, how long what it wrote is still read: a helper it left running may
/// hold the pipe open, and is not waited for.
const STDERR_GRACE: Duration = Duration::from_millis(500);

/// Runs the hook to its end (or kills it, and every process it started, at [`TIME_LIMIT`]) and
/// logs how it went. It runs in a process group of its own; its standard error is read as it
/// comes, [`STDERR_LIMIT`] kept.
pub(crate) async fn run(argv: &[String], failure: &Failure, env: Vec<(std::ffi::OsString, std::ffi::OsString)>) {
    let Some((program, args)) = argv.split_first() else {
        return;
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(env)
        .envs(failure.env())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let target = &failure.target;
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(target = %target, "on_failure: cannot run {program}: {e}");
            return;
        }
    };
    let pgid = child.id();
    let stderr = child.stderr.take();
    let kept = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut reader = tokio::spawn(read_capped(stderr, STDERR_LIMIT, kept.clone()));
    let status = tokio::time::timeout(TIME_LIMIT, child.wait()).await;
    let status = match status {
        Ok(Ok(st)) => st,
        Ok(Err(e)) => {
            tracing::error!(target = %target, "on_failure {program}: {e}");
            reader.abort();
            return;
        }
        Err(_) => {
            kill_group(pgid);
            let _ = child.wait().await;
            reader.abort();
            tracing::warn!(
                target = %target,
                "on_failure {program} was still running after {}s and was killed, with what it started",
                TIME_LIMIT.as_secs()
            );
            return;
        }
    };
    // What it wrote, without waiting for a helper that still holds the pipe.
    if tokio::time::timeout(STDERR_GRACE, &mut reader).await.is_err() {
        reader.abort();
    }
    let kept = std::mem::take(&mut *kept.lock().unwrap_or_else(|e| e.into_inner()));
    let stderr = String::from_utf8_lossy(&kept);
    let stderr = stderr.trim();
    let said = if stderr.is_empty() {
        String::new()
    } else {
        format!(": {}", stderr.chars().take(2000).collect::<String>())
    };
    if status.success() {
        tracing::info!(target = %target, "on_failure {program} ran ({status}){said}");
    } else {
        tracing::warn!(target = %target, "on_failure {program} failed ({status}){said}");
    }
}

/// Reads `pipe` to its end, keeping the first `limit` bytes in `kept` as they come.
async fn read_capped(
    pipe: Option<tokio::process::ChildStderr>,
    limit: usize,
    kept: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
) {
    use tokio::io::AsyncReadExt;
    let Some(mut pipe) = pipe else { return };
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                let room = limit.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

/// SIGKILL to the hook's process group: the hook and whatever it started.
fn kill_group(pgid: Option<u32>) {
    if let Some(pgid) = pgid.and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill(2) with a negative pid signals that process group; no memory is touched.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hook that floods its standard error costs [`STDERR_LIMIT`] of memory, not the flood.
    #[tokio::test]
    async fn a_flooded_stderr_is_kept_to_its_limit() {
        let mut child = tokio::process::Command::new("/bin/sh")
            .args(["-c", "head -c 3000000 /dev/zero >&2"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let kept = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        read_capped(child.stderr.take(), STDERR_LIMIT, kept.clone()).await;
        child.wait().await.unwrap();
        assert_eq!(kept.lock().unwrap().len(), STDERR_LIMIT);
    }

    fn failure() -> Failure {
        Failure {
            target: "cdn".into(),
            request: "purge cdn 7".into(),
            error: "HTTP 401".into(),
            files: 3,
            urls: (0..60).map(|i| format!("/p{i}.html")).collect(),
        }
    }

    #[test]
    fn the_environment_names_what_failed_and_at_most_50_urls() {
        let env: HashMap<&str, String> = failure().env().into_iter().collect();
        assert_eq!(env["PURGEWATCH_TARGET"], "cdn");
        assert_eq!(env["PURGEWATCH_FILES"], "3");
        assert_eq!(env["PURGEWATCH_URLS"].lines().count(), MAX_URLS);
    }

    #[test]
    fn variables_holding_a_secret_are_not_inherited() {
        let path = std::env::var("PATH").unwrap_or_default();
        let env = inherited_env(&[Secret::new(path.clone())]);
        assert!(!env.iter().any(|(k, _)| k == "PATH"), "PATH holds the 'secret'");
        let env = inherited_env(&[]);
        assert!(path.is_empty() || env.iter().any(|(k, _)| k == "PATH"));
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_one_run_per_target_per_minute() {
        let mut hooks = Hooks::default();
        let argv = vec!["true".to_string()];
        assert!(hooks.fire(&argv, failure(), &[]));
        assert!(!hooks.fire(&argv, failure(), &[]));
        let mut other = failure();
        other.target = "www".into();
        assert!(hooks.fire(&argv, other, &[]));
        tokio::time::advance(MIN_GAP).await;
        assert!(hooks.fire(&argv, failure(), &[]));
    }
}

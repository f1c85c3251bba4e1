//! `command`: anything a program can purge. The program (argv, no shell) runs with the
//! request's URLs on standard input, one a line (a lone `*` for everything), at most `max_urls`
//! per run, and `PURGEWATCH_TARGET` and `PURGEWATCH_BATCH` in its environment — the daemon's
//! own, less every variable that holds a configured secret.
//!
//! Exit 0 is success; 75 (`EX_TEMPFAIL`) and a run killed at `timeout` are retried; any other
//! exit fails for good, quoting the end of its output (scrubbed). The program runs in a process
//! group of its own (killed whole at the timeout); its output (standard output and error) is read
//! as it comes and the last [`OUTPUT_KEPT`] kept; a helper it leaves running that holds the pipe
//! is not waited for.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Accepted, ProviderError, Reason};
use super::{Keys, NO_SECRET, Shape, TargetKind};
use super::{Kind, Provider, TargetType, url_list, urls_of};
use crate::request::Request;
use crate::secret::Secret;

/// A command target: a program given the URLs on standard input.
#[derive(Debug, Clone)]
pub struct CommandTarget {
    /// Program (an absolute path) and arguments; no shell.
    pub argv: Vec<String>,
    pub timeout: Duration,
    pub max_urls: usize,
}

/// The most of a run's output kept (its end).
pub(crate) const OUTPUT_KEPT: usize = 64 * 1024;
/// After the program exits, how long its output is still read.
const OUTPUT_GRACE: Duration = Duration::from_millis(500);
/// `EX_TEMPFAIL`: try again later.
pub(crate) const TEMPFAIL: i32 = 75;

/// The text the program reads: one URL a line, or a lone `*`.
pub(crate) fn stdin_text(urls: &[String], everything: bool) -> String {
    if everything {
        return "*\n".into();
    }
    // A URL is one line: a line break in a name is escaped, never a line of its own.
    urls.iter()
        .map(|u| format!("{}\n", crate::logging::printable(u)))
        .collect()
}

/// The daemon's environment less every variable whose value holds a configured secret.
fn environment() -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    std::env::vars_os()
        .filter(|(_, v)| {
            let v = v.to_string_lossy();
            crate::secret::scrub(&v) == v
        })
        .filter(|(k, _)| !["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"].contains(&k.to_string_lossy().as_ref()))
        .collect()
}

pub(crate) async fn purge(
    c: &CommandTarget,
    target: &str,
    batch: &str,
    urls: &[String],
    everything: bool,
) -> Result<Accepted, ProviderError> {
    let Some((program, args)) = c.argv.split_first() else {
        return Err(ProviderError::permanent("command: no program".to_string()));
    };
    let what = format!(
        "command {program} (batch {batch}, {} URLs{})",
        urls.len(),
        if everything { ", everything" } else { "" }
    );
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(environment())
        .env("PURGEWATCH_TARGET", target)
        .env("PURGEWATCH_BATCH", batch)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| {
        ProviderError::permanent(format!(
            "{what}: cannot run it: {e} (is it still there, and executable?)"
        ))
    })?;
    let pgid = child.id();
    let (readers, kept) = attach(&mut child, stdin_text(urls, everything));
    let status = match tokio::time::timeout(c.timeout, child.wait()).await {
        Ok(Ok(st)) => st,
        Ok(Err(e)) => return Err(ProviderError::permanent(format!("{what}: {e}"))),
        Err(_) => {
            if let Some(pgid) = pgid.and_then(|p| i32::try_from(p).ok()) {
                // SAFETY: kill(2) with a negative pid signals that process group; no memory is touched.
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
            }
            let _ = child.wait().await;
            for r in &readers {
                r.abort();
            }
            return Err(ProviderError::transient(
                Reason::Timeout,
                format!(
                    "{what}: still running after {} and killed",
                    humantime::format_duration(c.timeout)
                ),
            ));
        }
    };
    for r in readers {
        let mut r = r;
        if tokio::time::timeout(OUTPUT_GRACE, &mut r).await.is_err() {
            r.abort();
        }
    }
    let output = std::mem::take(&mut *kept.lock().unwrap_or_else(|e| e.into_inner()));
    judge(&what, status, &output)
}

/// Feeds `text` to the child's standard input and keeps the tail of what it writes, on tasks
/// of their own: the readers, and where they keep it.
fn attach(child: &mut tokio::process::Child, text: String) -> (Vec<tokio::task::JoinHandle<()>>, Arc<Mutex<Vec<u8>>>) {
    let kept = Arc::new(Mutex::new(Vec::new()));
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(read_tail(out, kept.clone())));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(read_tail(err, kept.clone())));
    }
    if let Some(mut stdin) = child.stdin.take() {
        // A program that does not read its input (or exits early) is judged by its exit.
        tokio::spawn(async move {
            let _ = stdin.write_all(text.as_bytes()).await;
            let _ = stdin.shutdown().await;
        });
    }
    (readers, kept)
}

/// What the program's exit `status` and the tail of its `output` say of the purge (75 asks for
/// a retry; the output is scrubbed of every secret).
fn judge(what: &str, status: std::process::ExitStatus, output: &[u8]) -> Result<Accepted, ProviderError> {
    let output = crate::secret::scrub(&String::from_utf8_lossy(output)).into_owned();
    let tail: String = {
        let t = output.trim();
        let chars: Vec<char> = t.chars().collect();
        chars[chars.len().saturating_sub(500)..].iter().collect()
    };
    let said = if tail.is_empty() {
        String::new()
    } else {
        format!(": {tail}")
    };
    match status.code() {
        Some(0) => Ok(Accepted {
            job_id: None,
            message: if tail.is_empty() { "exit 0".into() } else { tail },
        }),
        Some(TEMPFAIL) => Err(ProviderError::transient(
            Reason::ServerError,
            format!("{what}: exit {TEMPFAIL} (try again later){said}"),
        )),
        Some(code) => Err(ProviderError::permanent(format!("{what}: exit {code}{said}"))),
        None => Err(ProviderError::permanent(format!(
            "{what}: killed by a signal ({status}){said}"
        ))),
    }
}

/// Reads `pipe` to its end into `kept`, keeping the last [`OUTPUT_KEPT`] bytes.
async fn read_tail(mut pipe: impl tokio::io::AsyncRead + Unpin, kept: Arc<Mutex<Vec<u8>>>) {
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut k = kept.lock().unwrap_or_else(|e| e.into_inner());
                k.extend_from_slice(&buf[..n]);
                if k.len() > OUTPUT_KEPT {
                    let cut = k.len() - OUTPUT_KEPT;
                    k.drain(..cut);
                }
            }
        }
    }
}

/// `check --remote`: the program exists and may be run.
pub(crate) fn check(c: &CommandTarget) -> Result<String, ProviderError> {
    let program = c.argv.first().map(String::as_str).unwrap_or_default();
    runnable(program)
        .map(|()| format!("{program} is executable"))
        .map_err(|why| ProviderError::permanent(format!("command {program}: {why}")))
}

/// Whether `program` can be run as a hook: an absolute path (no shell, no `$PATH` search: the
/// daemon's environment under systemd is not a login shell's) to an executable file.
pub(crate) fn runnable(program: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::path::Path::new(program);
    if !path.is_absolute() {
        return Err("not an absolute path: name the program by its full path, like /usr/local/bin/notify-ops (no shell runs it)".into());
    }
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => Err("not a file".into()),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => Err("not executable (chmod +x it)".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("cannot be run: {e}")),
    }
}

pub(crate) const TYPE: TargetType = TargetType {
    name: "command",
    keys: &["command", "timeout", "max_urls"],
    read,
};

fn read(k: &mut dyn Keys) -> TargetKind {
    let argv = k.strings("command");
    match argv.first() {
        None => k.error(
            "command",
            "missing (the program and its arguments, like [/usr/local/bin/purge-my-cdn, --zone, main])",
        ),
        Some(p) if !std::path::Path::new(p).is_absolute() => k.error(
            "command",
            format!("`{p}` is not an absolute path: name the program by its full path (no shell runs it, no $PATH is searched)"),
        ),
        _ => {}
    }
    let timeout = k.duration("timeout", Duration::from_secs(60));
    let max_urls = k.max_urls(1000);
    TargetKind::Command(CommandTarget {
        argv,
        timeout,
        max_urls,
    })
}

impl Kind for CommandTarget {
    fn type_name(&self) -> &'static str {
        TYPE.name
    }

    fn api(&self) -> (&str, &Secret) {
        (self.argv.first().map(String::as_str).unwrap_or_default(), &NO_SECRET)
    }

    fn shape(&self) -> Shape {
        Shape::Urls {
            max: self.max_urls,
            absolute: true,
            everything: true,
            prefixes: false,
        }
    }

    fn describe(&self, req: &Request) -> String {
        let (urls, everything, _) = urls_of(req);
        format!("run {}: {}", self.argv.join(" "), url_list(urls, everything))
    }

    async fn purge(&self, p: &Provider, req: &Request) -> Result<Accepted, ProviderError> {
        let (urls, everything, files) = urls_of(req);
        let (_, batch) = super::webhook::body(&p.target, urls, everything, files);
        purge(self, &p.target, &batch, urls, everything).await
    }

    async fn check(&self, _p: &Provider) -> Result<String, ProviderError> {
        check(self)
    }
}

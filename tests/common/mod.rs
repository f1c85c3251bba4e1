//! Helpers shared by the integration tests: a site in a temp directory, the real binary started
//! on it, and waiting for conditions with generous deadlines. Tests sleep only to show that
//! nothing *more* arrives (no extra purge after the expected one): a wait that can make a test
//! pass wrongly on a slow machine, never fail.

#![allow(dead_code)]

pub mod caches;
pub mod cloudfront;
pub mod edge;
pub mod fake;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use edge::Edge;
#[allow(unused_imports)]
pub use fake::Reply;
pub use fake::{Fake, Recorded, Route};

/// How long any condition may take before a test fails. Generous: CI shares 2 cores.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_purgewatch")
}

/// Polls `cond` every 25 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A temp directory with `public/` (the watched site), `state/` and a rules file.
pub struct Site {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub rules: PathBuf,
    pub state: PathBuf,
}

impl Site {
    pub fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("public");
        std::fs::create_dir_all(&root).unwrap();
        Site {
            rules: dir.path().join("rules.yaml"),
            state: dir.path().join("state"),
            root,
            dir,
        }
    }

    /// Writes `rel` under the site root, creating directories.
    pub fn write(&self, rel: &str, content: &str) {
        let p = self.root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write_rules(&self, yaml: &str) {
        std::fs::write(&self.rules, yaml).unwrap();
    }

    /// Rules with one SiteHost and one VIMS target on `fake`, and one rule watching `public`.
    pub fn rules_for(&self, fake: &Fake, debounce: &str, extra_rule: &str) -> String {
        format!(
            r#"state_dir: {state}
defaults:
  debounce: {debounce}
  max_delay: 30s
  retry_backoff: 200ms
  retry_backoff_max: 1s
targets:
  www:
    type: sitehost
    api_url: {sh}
    api_key: ${{PW_TEST_SITEHOST_KEY}}
    client_id: 12345
    server: ch-server1
    stack: mystack
  cdn:
    type: vims
    api_url: {vims}
    token: sk_live_testtoken
    cdn_id: 7
    host: all
rules:
  - name: site
    watch: public
    targets: [www, cdn]
{extra_rule}"#,
            state = self.state.display(),
            sh = fake.sitehost_url(),
            vims = fake.vims_url(),
        )
    }

    /// A site with `index.html`, rules for `fake` with `debounce`, and the daemon running and
    /// ready on it.
    pub fn running(fake: &Fake, debounce: &str) -> (Site, Daemon) {
        let site = Site::new();
        site.write("index.html", "home");
        site.write_rules(&site.rules_for(fake, debounce, ""));
        let d = site.start(&["run"]);
        d.wait_ready();
        (site, d)
    }

    /// Starts `purgewatch ARGS -c rules.yaml` with the test environment.
    pub fn start(&self, args: &[&str]) -> Daemon {
        self.start_with(args, &[])
    }

    pub fn start_with(&self, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut cmd = self.command(Path::new(bin()), args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Daemon::spawn(cmd)
    }

    /// `program ARGS -c rules.yaml` with the test environment, its output piped.
    pub fn command(&self, program: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .arg("-c")
            .arg(&self.rules)
            .env("PW_TEST_SITEHOST_KEY", "sh-secret-key-123")
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs a command to completion: (status, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(bin())
            .args(args)
            .arg("-c")
            .arg(&self.rules)
            .env("PW_TEST_SITEHOST_KEY", "sh-secret-key-123")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// The real binary, running; its output is collected line by line.
pub struct Daemon {
    pub child: Child,
    log: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

/// Runs `f` again while it fails with ETXTBSY ("text file busy"). A binary a test copied is
/// briefly held open for writing in every child another test's thread forks meanwhile, until
/// that child execs: starting the copy then fails with ETXTBSY for a moment.
pub fn unless_busy<T>(mut f: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    let end = Instant::now() + DEADLINE;
    loop {
        match f() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

impl Daemon {
    pub fn spawn(mut cmd: Command) -> Daemon {
        let mut child = unless_busy(|| cmd.spawn()).expect("start purgewatch");
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        for stream in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let log = log.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    log.lock().unwrap().push(line);
                }
            }));
        }
        Daemon { child, log, readers }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn lines_containing(&self, needle: &str) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// Waits until `n` lines contain `needle`; panics with the log when they do not.
    pub fn wait_for_lines(&self, needle: &str, n: usize) {
        if !wait_until(DEADLINE, || self.lines_containing(needle).len() >= n) {
            panic!("no {n} lines with {needle:?} within {DEADLINE:?}; log:\n{}", self.log());
        }
    }

    pub fn wait_for(&self, needle: &str) {
        self.wait_for_lines(needle, 1)
    }

    pub fn wait_ready(&self) {
        self.wait_for("ready");
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit and returns its status code.
    pub fn wait_exit(&mut self) -> i32 {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                // The pipes close with the process: read them to the end.
                for r in self.readers.drain(..) {
                    let _ = r.join();
                }
                return st.code().unwrap_or(-1);
            }
            if Instant::now() > end {
                panic!("purgewatch did not exit within {DEADLINE:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `fake` has received `n` requests to `route`; panics with `daemon`'s log otherwise.
pub fn wait_requests(fake: &Fake, route: Route, n: usize, daemon: &Daemon) -> Vec<Recorded> {
    if !wait_until(DEADLINE, || fake.requests_to(route).len() >= n) {
        panic!(
            "expected {n} {route:?} requests, got {}; log:\n{}",
            fake.requests_to(route).len(),
            daemon.log()
        );
    }
    fake.requests_to(route)
}

/// True when `pattern` (a VIMS regex, or `*`) matches `url`.
pub fn pattern_matches(pattern: &str, url: &str) -> bool {
    pattern == "*" || regex::Regex::new(pattern).unwrap().is_match(url)
}

pub fn touch_rel(root: &Path, rel: &str) {
    let f = std::fs::File::options().write(true).open(root.join(rel)).unwrap();
    f.set_modified(std::time::SystemTime::now()).unwrap();
}

/// `GET path` over plain HTTP/1.0 (no chunked replies): the status code and the body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, body.to_string())
}

impl Daemon {
    /// The address `/metrics` is served on, from the daemon's log (`metrics_listen` with port 0
    /// picks a free one).
    pub fn metrics_addr(&self) -> String {
        self.wait_for("serving /metrics and /healthz on http://");
        let line = self.lines_containing("serving /metrics and /healthz on http://")[0].clone();
        line.rsplit("http://").next().unwrap().trim().to_string()
    }
}

/// The invariant every deploy test ends on: once the daemon is idle, its record of each tree
/// equals the disk, so `purgewatch plan` has nothing to purge for any target. (Polled: the
/// daemon may still be committing its last batch.)
pub fn assert_plan_empty(site: &Site) {
    let mut last = String::new();
    let ok = wait_until(DEADLINE, || {
        let (code, out, err) = site.run(&["plan"]);
        last = format!("exit {code}\n{out}{err}");
        code == 0
            && out
                .lines()
                .filter(|l| l.starts_with("target "))
                .all(|l| l.contains(": 0 files, 0 requests"))
    });
    assert!(ok, "plan is not empty once the daemon is idle:\n{last}");
}

/// Stops the daemon (SIGTERM), starts it again on the same rules, and checks that the restart
/// sends nothing: its record matched the disk. Returns the new daemon.
pub fn restart_sends_nothing(site: &Site, fake: &Fake, mut d: Daemon) -> Daemon {
    d.signal("TERM");
    assert_eq!(d.wait_exit(), 0, "{}", d.log());
    let before = fake.requests().len();
    let d = site.start(&["run"]);
    d.wait_ready();
    // Showing that nothing more arrives needs a wait (see the module's note).
    std::thread::sleep(Duration::from_millis(1500));
    let after = fake.requests();
    assert_eq!(
        after.len(),
        before,
        "the restart sent {:?}\n{}",
        &after[before..],
        d.log()
    );
    d
}

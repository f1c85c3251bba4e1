//! End-to-end deploy storms: the release binary against the local fake provider, and the same
//! storms through `inotifywait -m -r` (the floor for the cost of watching) and, where installed,
//! watchexec, lsyncd and watchman driving curl. Each tool runs alone, on a site of its own built
//! the same way, so that no tool sees another's reads as events or shares its CPU.
//!
//! ```text
//! cargo bench --bench storm                      # 20,000 files
//! cargo bench --bench storm -- --files 100000    # 100,000 files
//! cargo bench --bench storm -- --idle 30 --repeat 5
//! cargo bench --bench storm -- --only swap --no-scripts  # some storms; inotifywait only
//! cargo bench --bench storm -- --tools none             # purgewatch alone
//! cargo bench --bench storm -- --hugo-only --hugo-pages 1500,10000  # the real-site storms only
//! ```
//!
//! With `hugo` on PATH, `cargo bench` also runs the real-site storms of `hugo_site.rs` (a Hugo
//! blog of 1,500 pages by default) after the synthetic ones.
//!
//! Run without `--bench` (as `cargo test` runs it: `test = true` in Cargo.toml), it is a smoke
//! test instead: a 3,000-file site through every storm, purgewatch alone, and it fails unless each
//! storm was purged exactly (recall and precision 1). So CI keeps the benchmark working and the
//! deploy storms it measures correct, without timing anything.
//!
//! Per storm it reports: provider requests, recall and precision of the purged URLs (against the
//! files whose bytes really changed, index aliases included), the time from the last write to the
//! first purge request minus the debounce (p50/p99 over the repeats), the daemon's CPU seconds,
//! and for inotifywait its CPU seconds and the events it printed (what a one-curl-per-event
//! script would send). Then peak RSS and idle wakeups per second (context switches of every
//! thread while nothing changes).

#[path = "../tests/common/fake.rs"]
mod fake;
#[path = "storm/hugo_gen.rs"]
mod hugo_gen;
#[path = "storm/hugo_site.rs"]
mod hugo_site;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fake::{Fake, Recorded};

const DEBOUNCE: Duration = Duration::from_millis(1000);

struct Args {
    files: usize,
    idle: u64,
    repeat: usize,
    /// Run only the storms whose name contains this.
    only: Option<String>,
    /// Leave out watchexec, lsyncd and watchman (purgewatch and inotifywait only).
    no_scripts: bool,
    /// Run only these tools besides purgewatch (`--tools inotifywait,watchman`; `--tools none`).
    tools: Option<String>,
    /// Sizes of the Hugo sites for the real-site storms (`--hugo-pages 1500,10000`).
    hugo_pages: Vec<usize>,
    /// Only the real-site storms.
    hugo_only: bool,
}

fn args() -> Args {
    let mut a = Args {
        files: 20_000,
        idle: 30,
        repeat: 5,
        only: None,
        no_scripts: false,
        tools: None,
        hugo_pages: vec![1500],
        hugo_only: false,
    };
    let v: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < v.len() {
        let next = || v.get(i + 1).and_then(|s| s.parse().ok());
        match v[i].as_str() {
            "--files" => a.files = next().expect("--files N"),
            "--idle" => a.idle = next().expect("--idle SECONDS") as u64,
            "--repeat" => a.repeat = next().expect("--repeat N"),
            "--only" => a.only = v.get(i + 1).cloned(),
            "--tools" => a.tools = v.get(i + 1).cloned(),
            "--hugo-pages" => {
                a.hugo_pages = v
                    .get(i + 1)
                    .map(|l| l.split(',').filter_map(|n| n.parse().ok()).collect())
                    .unwrap_or_default()
            }
            "--hugo-only" => {
                a.hugo_only = true;
                i += 1;
                continue;
            }
            "--no-scripts" => {
                a.no_scripts = true;
                i += 1;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

/// A synthetic site: directories of 100 files, each with an index.html.
struct Site {
    files: Vec<String>,
    version: Vec<u32>,
}

impl Site {
    fn new(n: usize) -> Site {
        let files = (0..n)
            .map(|i| {
                let (dir, k) = (i / 100, i % 100);
                if k == 0 {
                    format!("s{:03}/d{}/index.html", dir / 10, dir % 10)
                } else {
                    format!("s{:03}/d{}/p{k:02}.html", dir / 10, dir % 10)
                }
            })
            .collect();
        Site {
            files,
            version: vec![0; n],
        }
    }

    fn body(&self, i: usize) -> String {
        format!(
            "<html><body><h1>{}</h1><p>version {}</p>{}</body></html>",
            self.files[i],
            self.version[i],
            "lorem ipsum ".repeat(40)
        )
    }

    fn write_all(&self, root: &Path) {
        for i in 0..self.files.len() {
            let p = root.join(&self.files[i]);
            if i % 100 == 0 {
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            }
            std::fs::write(p, self.body(i)).unwrap();
        }
    }

    /// Picks `share` of the files, spread over the site, and bumps their version.
    fn change(&mut self, share: f64, seed: usize) -> Vec<usize> {
        let n = ((self.files.len() as f64 * share).round() as usize).max(1);
        let step = self.files.len() / n;
        let picked: Vec<usize> = (0..n).map(|k| (k * step + seed * 7 + 1) % self.files.len()).collect();
        for &i in &picked {
            self.version[i] += 1;
        }
        picked
    }

    fn urls(&self, i: usize) -> Vec<String> {
        let f = &self.files[i];
        let mut out = vec![format!("/{f}")];
        if let Some(dir) = f.strip_suffix("/index.html") {
            out.push(format!("/{dir}/"));
            out.push(format!("/{dir}"));
        }
        out
    }
}

/// CPU seconds (user + system) of a process, from /proc; with `children`, also those of the
/// children it has waited for (the curls a watcher script starts).
fn cpu_secs(pid: u32, children: bool) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let fields: &[usize] = if children { &[11, 12, 13, 14] } else { &[11, 12] };
    let ticks: f64 = fields
        .iter()
        .map(|&k| f.get(k).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0))
        .sum();
    ticks / 100.0
}

fn status_kb(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Context switches (voluntary + involuntary) of all threads of `pid`.
fn wakeups(pid: u32) -> u64 {
    let mut total = 0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let s = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
            for l in s.lines() {
                if l.starts_with("voluntary_ctxt_switches") || l.starts_with("nonvoluntary_ctxt_switches") {
                    total += l
                        .split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0);
                }
            }
        }
    }
    total
}

struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    count: Arc<AtomicU64>,
}

impl Proc {
    fn spawn(mut cmd: Command, keep_lines: bool) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicU64::new(0));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let (lines, count) = (lines.clone(), count.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    count.fetch_add(1, Ordering::Relaxed);
                    if keep_lines {
                        lines.lock().unwrap().push(line);
                    }
                }
            });
        }
        Proc { child, lines, count }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_line(&self, needle: &str, timeout: Duration) {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.lines.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no line with {needle:?}: {:?}", self.lines.lock().unwrap());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b < 0.01 {
        "–".into()
    } else {
        format!("{:.1}×", a / b)
    }
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if s.is_empty() {
        return f64::NAN;
    }
    s[((s.len() - 1) as f64 * p).round() as usize]
}

/// Scores one storm's VIMS requests against the files that changed.
fn score(site: &Site, changed: &[usize], reqs: &[Recorded]) -> (f64, f64) {
    let pats: Vec<String> = reqs
        .iter()
        .filter(|r| r.path.contains("/services/cdn/"))
        .map(|r| r.pattern())
        .collect();
    if pats.iter().any(|p| p == "*") {
        let changed_urls: usize = changed.iter().map(|&i| site.urls(i).len()).sum();
        let all: usize = (0..site.files.len()).map(|i| site.urls(i).len()).sum();
        return (1.0, changed_urls as f64 / all as f64);
    }
    let res: Vec<regex::Regex> = pats.iter().map(|p| regex::Regex::new(p).unwrap()).collect();
    let is_changed: std::collections::HashSet<usize> = changed.iter().copied().collect();
    let (mut hit_changed, mut hit, mut want) = (0usize, 0usize, 0usize);
    for i in 0..site.files.len() {
        for u in site.urls(i) {
            let m = res.iter().any(|r| r.is_match(&u));
            let c = is_changed.contains(&i);
            want += c as usize;
            hit += m as usize;
            hit_changed += (m && c) as usize;
        }
    }
    (
        hit_changed as f64 / want.max(1) as f64,
        if hit == 0 { 1.0 } else { hit_changed as f64 / hit as f64 },
    )
}

fn rules(dir: &Path, fake: &Fake, watch: &str) -> PathBuf {
    let p = dir.join("rules.yaml");
    std::fs::write(
        &p,
        format!(
            "state_dir: {}\ndefaults:\n  debounce: {}ms\n  max_delay: 10m\ntargets:\n  www:\n    type: sitehost\n    api_url: {}\n    api_key: bench\n    client_id: 1\n    server: s\n    stack: x\n  cdn:\n    type: vims\n    api_url: {}\n    token: bench\n    cdn_id: 7\nrules:\n  - name: site\n    watch: {watch}\n    targets: [www, cdn]\n    exclude: [\"**/.*\"]\n",
            dir.join("state").display(),
            DEBOUNCE.as_millis(),
            fake.sitehost_url(),
            fake.vims_url()
        ),
    )
    .unwrap();
    p
}

fn installed(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// The curl a purge-everything script runs: VIMS `*` (SiteHost can only purge a whole stack).
fn curl_args(fake: &Fake) -> Vec<String> {
    [
        "-s",
        "-o",
        "/dev/null",
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-H",
        "Authorization: bench",
        "-d",
        r#"{"pattern":"*"}"#,
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("{}/services/cdn/7/purge", fake.vims_url())])
    .collect()
}

fn purges(fake: &Fake) -> Vec<Recorded> {
    let mut v = fake.sitehost_purges();
    v.extend(fake.vims_purges());
    v.sort_by_key(|r| r.at);
    v
}

/// Waits until purge requests stop arriving after a storm: none for the debounce + 1.5 s, after
/// at least one came. A script that never sends one is given 10 s past the debounce (it missed
/// the storm); purgewatch must send one.
fn settle(fake: &Fake, before: usize, last_write: Instant, must_arrive: bool) -> Vec<Recorded> {
    let end = Instant::now() + Duration::from_secs(600);
    let (mut last_n, mut quiet_since) = (before, Instant::now());
    loop {
        let n = purges(fake).len();
        if n != last_n {
            last_n = n;
            quiet_since = Instant::now();
        }
        let quiet = quiet_since.elapsed() > DEBOUNCE + Duration::from_millis(1500);
        let given_up = !must_arrive && last_write.elapsed() > DEBOUNCE + Duration::from_secs(10);
        if quiet && (n > before || given_up) {
            return purges(fake)[before..].to_vec();
        }
        assert!(Instant::now() < end, "no purge arrived");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until a process has printed nothing for a second (inotifywait done with a storm).
fn quiet_output(p: &Proc) {
    let (mut last, mut since) = (u64::MAX, Instant::now());
    while since.elapsed() < Duration::from_secs(1) {
        let n = p.count.load(Ordering::Relaxed);
        if n != last {
            (last, since) = (n, Instant::now());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A watcher the storms run through: purgewatch, or a tool users script instead.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tool {
    Purgewatch,
    Inotifywait,
    Watchexec,
    Lsyncd,
    Watchman,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Purgewatch => "purgewatch",
            Tool::Inotifywait => "inotifywait -m -r",
            Tool::Watchexec => "watchexec + curl",
            Tool::Lsyncd => "lsyncd + curl",
            Tool::Watchman => "watchman trigger + curl",
        }
    }

    fn slug(self) -> &'static str {
        self.name().split_whitespace().next().unwrap_or("tool")
    }

    fn installed(self) -> bool {
        match self {
            Tool::Purgewatch => true,
            Tool::Inotifywait => installed("inotifywait", "--help"),
            Tool::Watchexec => installed("watchexec", "--version"),
            Tool::Lsyncd => installed("lsyncd", "-version"),
            Tool::Watchman => installed("watchman", "--version"),
        }
    }
}

/// One running watcher and the fake provider its requests go to.
struct Watcher {
    tool: Tool,
    proc: Proc,
    fake: Fake,
    /// purgewatch's rules file (for the catch-up restart).
    rules: PathBuf,
    /// With STORM_DAEMON_LOG set: the daemon's log lines, with the bench's last writes among them.
    log: Option<Arc<Mutex<Vec<String>>>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let (Some(log), Ok(path)) = (&self.log, std::env::var("STORM_DAEMON_LOG")) {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap();
            for l in log.lock().unwrap().iter() {
                writeln!(f, "{l}").unwrap();
            }
        }
    }
}

impl Watcher {
    fn stop(&mut self) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
    }

    /// CPU seconds so far; for the scripts, with the curls they started and reaped.
    fn cpu(&self) -> f64 {
        cpu_secs(self.proc.pid(), self.tool != Tool::Purgewatch)
    }
}

/// Starts `tool` on `watch_root` (purgewatch: a rule watching `rule_watch` under `dir`) and
/// returns once it is watching, with the time purgewatch took to be ready.
fn start(tool: Tool, dir: &Path, watch_root: &Path, rule_watch: &str) -> (Watcher, Duration) {
    let fake = Fake::start();
    let rules = rules(dir, &fake, rule_watch);
    let t0 = Instant::now();
    let mut cmd;
    match tool {
        Tool::Purgewatch => {
            cmd = Command::new(env!("CARGO_BIN_EXE_purgewatch"));
            // STORM_RUST_LOG=purgewatch=debug with STORM_DAEMON_LOG=FILE: the daemon's log, to profile.
            let level = std::env::var("STORM_RUST_LOG").unwrap_or_else(|_| "info".into());
            cmd.args(["run", "-c"]).arg(&rules).env("RUST_LOG", level);
        }
        Tool::Inotifywait => {
            cmd = Command::new("inotifywait");
            cmd.args(["-m", "-r", "-q", "--format", "%e %w%f"]).arg(watch_root);
        }
        Tool::Watchexec => {
            cmd = Command::new("watchexec");
            cmd.args([
                "--postpone",
                "--quiet",
                "--shell=none",
                "--ignore-nothing",
                "--on-busy-update=queue",
            ])
            .arg(format!("--debounce={}ms", DEBOUNCE.as_millis()))
            .arg("-w")
            .arg(watch_root)
            .arg("--")
            .arg("curl")
            .args(curl_args(&fake));
        }
        Tool::Lsyncd => {
            let conf = dir.join("lsyncd.lua");
            let args: Vec<String> = curl_args(&fake).iter().map(|a| format!("{a:?}")).collect();
            std::fs::write(
                &conf,
                format!(
                    "settings {{ nodaemon = true, insist = true }}\n\
                     purge = {{\n\
                       delay = {},\n\
                       maxProcesses = 1,\n\
                       onStartup = function(event) end,\n\
                       action = function(inlet)\n\
                         local elist = inlet.getEvents()\n\
                         spawn(elist, \"/usr/bin/curl\", {})\n\
                       end,\n\
                     }}\n\
                     sync {{ purge, source = {:?} }}\n",
                    DEBOUNCE.as_secs().max(1),
                    args.join(", "),
                    watch_root.display().to_string()
                ),
            )
            .unwrap();
            cmd = Command::new("lsyncd");
            cmd.args(["-nodaemon", "-log", "Exec"]).arg(&conf);
        }
        Tool::Watchman => {
            // A private server; its settle period is the debounce, set in the watched root.
            std::fs::write(
                watch_root.join(".watchmanconfig"),
                format!("{{\"settle\": {}}}", DEBOUNCE.as_millis()),
            )
            .unwrap();
            cmd = Command::new("watchman");
            cmd.args(["--foreground", "--no-save-state"])
                .arg(format!("--sockname={}", dir.join("watchman.sock").display()))
                .arg(format!("--logfile={}", dir.join("watchman.log").display()))
                .arg(format!("--pidfile={}", dir.join("watchman.pid").display()))
                .arg(format!("--statefile={}", dir.join("watchman.state").display()));
        }
    }
    let proc = Proc::spawn(cmd, tool == Tool::Purgewatch);
    if tool == Tool::Purgewatch {
        proc.wait_line("ready", Duration::from_secs(600));
    } else {
        if tool == Tool::Watchman {
            watchman_trigger(dir, watch_root, &fake);
        }
        // The others print nothing once their watches are set: give them time to set them.
        std::thread::sleep(Duration::from_secs(5));
    }
    let took = t0.elapsed();
    let log = (tool == Tool::Purgewatch && std::env::var_os("STORM_DAEMON_LOG").is_some()).then(|| proc.lines.clone());
    (
        Watcher {
            tool,
            proc,
            fake,
            rules,
            log,
        },
        took,
    )
}

/// `watchman watch ROOT` and a trigger that runs the purge-everything curl on any change.
fn watchman_trigger(dir: &Path, root: &Path, fake: &Fake) {
    let sock = dir.join("watchman.sock");
    let end = Instant::now() + Duration::from_secs(60);
    while !sock.exists() {
        assert!(Instant::now() < end, "watchman did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let root = root.display().to_string();
    let mut command = vec![serde_json::json!("curl")];
    command.extend(curl_args(fake).into_iter().map(serde_json::Value::from));
    for cmd in [
        serde_json::json!(["watch", root]),
        serde_json::json!(["trigger", root, {
            "name": "purge", "expression": ["true"], "command": command, "append_files": false
        }]),
        serde_json::json!(["clock", root, {"sync_timeout": 600000}]),
    ] {
        let mut child = Command::new("watchman")
            .arg(format!("--sockname={}", sock.display()))
            .args(["--no-spawn", "-j"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("watchman client");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(cmd.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let reply = String::from_utf8_lossy(&out.stdout);
        assert!(!reply.contains("\"error\""), "watchman {cmd}: {reply}");
    }
}

/// One storm as one tool saw it, averaged over the repeats.
struct Seen {
    storm: String,
    repeats: usize,
    /// Purge requests per storm; for inotifywait, the events it printed (what a one-curl-per-
    /// event script would send).
    requests: f64,
    /// Storms after which a request covering the last write arrived.
    covered: usize,
    recall: f64,
    precision: f64,
    /// Last write → the request that covers it: purgewatch's first request (it purges once per
    /// settled batch), a script's last (earlier ones may have gone before the last write).
    latency_ms: Vec<f64>,
    /// How long each storm's writes took (first to last). A deploy longer than the rules'
    /// `max_delay` is purged in parts by design, so the bench's `max_delay` is set far above them.
    deploy_s: Vec<f64>,
    cpu: f64,
}

impl Seen {
    fn overhead_ms(&self) -> Vec<f64> {
        let d = DEBOUNCE.as_secs_f64() * 1000.0;
        self.latency_ms.iter().map(|l| l - d).collect()
    }
}

fn run_storm(
    w: &Watcher,
    only: &Option<String>,
    name: &str,
    site: &mut Site,
    repeat: usize,
    mut storm: impl FnMut(&mut Site, usize) -> Vec<usize>,
) -> Option<Seen> {
    if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
        return None;
    }
    let (cpu0, printed0) = (w.cpu(), w.proc.count.load(Ordering::Relaxed));
    let mut seen = Seen {
        storm: name.into(),
        repeats: repeat,
        requests: 0.0,
        covered: 0,
        recall: 0.0,
        precision: 0.0,
        latency_ms: Vec::new(),
        deploy_s: Vec::new(),
        cpu: 0.0,
    };
    for r in 0..repeat {
        let before = purges(&w.fake).len();
        let first_write = Instant::now();
        let changed = storm(site, r);
        let last_write = Instant::now();
        seen.deploy_s.push((last_write - first_write).as_secs_f64());
        if let Some(log) = &w.log {
            log.lock().unwrap().push(format!(
                "{} bench: last write of {name}",
                humantime::format_rfc3339_micros(std::time::SystemTime::now())
            ));
        }
        if w.tool == Tool::Inotifywait {
            quiet_output(&w.proc);
            continue;
        }
        let reqs = settle(&w.fake, before, last_write, w.tool == Tool::Purgewatch);
        seen.requests += reqs.len() as f64;
        if let Some(log) = &w.log {
            for q in &reqs {
                let wall = std::time::SystemTime::now() - q.at.elapsed();
                log.lock().unwrap().push(format!(
                    "{} bench: request arrived {}",
                    humantime::format_rfc3339_micros(wall),
                    q.path
                ));
            }
        }
        let after: Vec<Instant> = reqs.iter().map(|q| q.at).filter(|at| *at >= last_write).collect();
        let covering = if w.tool == Tool::Purgewatch {
            after.iter().min()
        } else {
            after.iter().max()
        };
        if let Some(at) = covering {
            seen.covered += 1;
            seen.latency_ms
                .push(at.duration_since(last_write).as_secs_f64() * 1000.0);
            let (rc, pr) = score(site, &changed, &reqs);
            seen.recall += rc;
            seen.precision += pr;
        }
    }
    let n = repeat as f64;
    if w.tool == Tool::Inotifywait {
        seen.requests = (w.proc.count.load(Ordering::Relaxed) - printed0) as f64;
        seen.covered = repeat;
    }
    seen.requests /= n;
    seen.recall /= n;
    seen.precision /= seen.covered.max(1) as f64;
    seen.cpu = (w.cpu() - cpu0) / n;
    Some(seen)
}

fn write_changed(root: &Path, site: &Site, idx: &[usize]) {
    for &i in idx {
        std::fs::write(root.join(&site.files[i]), site.body(i)).unwrap();
    }
}

fn copy_release(site: &Site, to: &Path) {
    site.write_all(to);
}

/// What one tool's pass measured.
struct Pass {
    tool: Tool,
    seen: Vec<Seen>,
    start: Duration,
    rss_a_kb: u64,
    rss_b_kb: u64,
    idle_wakeups: Option<f64>,
    catch_up: Option<(usize, Duration)>,
}

/// Every storm through one tool alone, on a site of its own built the same way, so that no
/// tool's reads show up in another's events or share its CPU.
fn run_pass(tool: Tool, a: &Args, tmp: &Path) -> Pass {
    eprintln!("storm: {} …", tool.name());
    let only = &a.only;
    let base = tmp.join(tool.slug());
    let mut seen = Vec::new();

    // Site A: a plain directory; in-place storms and a rename swap.
    let dir_a = base.join("a");
    let root = dir_a.join("public");
    std::fs::create_dir_all(&root).unwrap();
    let mut site = Site::new(a.files);
    site.write_all(&root);
    let (w, start_took) = start(tool, &dir_a, &root, "public");
    let idle_wakeups = (tool == Tool::Purgewatch).then(|| {
        let w0 = wakeups(w.proc.pid());
        std::thread::sleep(Duration::from_secs(a.idle));
        (wakeups(w.proc.pid()) - w0) as f64 / a.idle as f64
    });

    seen.extend(run_storm(
        &w,
        only,
        "hugo rewrite, 1% changed",
        &mut site,
        a.repeat,
        |s, r| {
            let changed = s.change(0.01, r);
            s.write_all(&root);
            changed
        },
    ));
    seen.extend(run_storm(&w, only, "1,000 new files", &mut site, a.repeat, |s, r| {
        let base = s.files.len();
        for k in 0..1000 {
            s.files.push(format!("new{r}/b{}/n{k:03}.html", k / 100));
            s.version.push(0);
        }
        for k in 0..1000 {
            let p = root.join(&s.files[base + k]);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, s.body(base + k)).unwrap();
        }
        (base..base + 1000).collect()
    }));
    seen.extend(run_storm(
        &w,
        only,
        "rsync-style (temp + rename), 1%",
        &mut site,
        a.repeat,
        |s, r| {
            let changed = s.change(0.01, r + 100);
            for &i in &changed {
                let dst = root.join(&s.files[i]);
                let tmp = dst.with_file_name(format!(".{}.XXXXXX", dst.file_name().unwrap().to_string_lossy()));
                std::fs::write(&tmp, s.body(i)).unwrap();
                std::fs::rename(&tmp, &dst).unwrap();
            }
            changed
        },
    ));
    seen.extend(run_storm(
        &w,
        only,
        "trickle: single edits",
        &mut site,
        a.repeat * 4,
        |s, r| {
            let i = (r * 7919 + 13) % s.files.len();
            s.version[i] += 1;
            write_changed(&root, s, &[i]);
            vec![i]
        },
    ));
    // A real deploy: a fresh build of the whole site elsewhere (every file new, new mtimes, 1%
    // with new bytes), copied over with Debian's rsync, which writes every file through a
    // temporary name and a rename and then sets every directory's mtime. Before the rename
    // swap: watchman drops its watch when the watched directory is renamed away, and a
    // recursive inotifywait goes on watching the old one.
    if installed("rsync", "--version") {
        seen.extend(run_storm(
            &w,
            only,
            "real rsync -a --delete of a fresh build, 1%",
            &mut site,
            a.repeat,
            |s, r| {
                let changed = s.change(0.01, r + 400);
                let build = dir_a.join("build");
                let _ = std::fs::remove_dir_all(&build);
                copy_release(s, &build);
                let st = Command::new("rsync")
                    .args(["-a", "--delete"])
                    .arg(format!("{}/", build.display()))
                    .arg(format!("{}/", root.display()))
                    .status()
                    .expect("run rsync");
                assert!(st.success(), "rsync failed");
                changed
            },
        ));
    } else if tool == Tool::Purgewatch {
        println!("storm \"real rsync -a --delete\": skipped (rsync is not installed: apt-get install rsync)");
    }
    seen.extend(run_storm(
        &w,
        only,
        "rename swap (mv public.new public), 1%",
        &mut site,
        a.repeat,
        |s, r| {
            let changed = s.change(0.01, r + 200);
            let next = dir_a.join("public.new");
            copy_release(s, &next);
            let old = dir_a.join("public.old");
            let _ = std::fs::remove_dir_all(&old);
            std::fs::rename(&root, &old).unwrap();
            std::fs::rename(&next, &root).unwrap();
            changed
        },
    ));
    let rss_a_kb = status_kb(w.proc.pid(), "VmHWM");
    let mut w = w;
    w.stop();

    // Catch-up: purgewatch restarted on the unchanged tree (warm page cache).
    let catch_up = (tool == Tool::Purgewatch).then(|| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_purgewatch"));
        cmd.args(["run", "-c"]).arg(&w.rules);
        let t0 = Instant::now();
        let d = Proc::spawn(cmd, true);
        d.wait_line("ready", Duration::from_secs(600));
        (site.files.len(), t0.elapsed())
    });
    drop(w);

    // Site B: `current -> releases/N`, switched atomically.
    let dir_b = base.join("b");
    let rel = |n: usize| dir_b.join(format!("releases/{n}"));
    copy_release(&site, &rel(0));
    std::os::unix::fs::symlink(rel(0), dir_b.join("current")).unwrap();
    let (w, _) = start(tool, &dir_b, &dir_b, "current");
    seen.extend(run_storm(
        &w,
        only,
        "symlink swap (current -> releases/N), 1%",
        &mut site,
        a.repeat,
        |s, r| {
            let changed = s.change(0.01, r + 300);
            copy_release(s, &rel(r + 1));
            let tmp = dir_b.join("current.tmp");
            std::os::unix::fs::symlink(rel(r + 1), &tmp).unwrap();
            std::fs::rename(&tmp, dir_b.join("current")).unwrap();
            changed
        },
    ));
    let rss_b_kb = status_kb(w.proc.pid(), "VmHWM");
    drop(w);
    let _ = std::fs::remove_dir_all(&base);
    Pass {
        tool,
        seen,
        start: start_took,
        rss_a_kb,
        rss_b_kb,
        idle_wakeups,
        catch_up,
    }
}

impl Args {
    /// What `cargo test` runs: every storm once on a small site, purgewatch alone.
    fn smoke() -> Args {
        Args {
            files: 3000,
            idle: 1,
            repeat: 1,
            only: None,
            no_scripts: true,
            tools: Some("none".into()),
            hugo_pages: vec![],
            hugo_only: false,
        }
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // tools probing bench binaries
    }
    // `cargo bench` passes --bench; `cargo test` runs the binary without it.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let a = if smoke { Args::smoke() } else { args() };
    let tmp = tempfile::tempdir().unwrap();
    if !smoke {
        for &pages in &a.hugo_pages {
            let bin = Path::new(env!("CARGO_BIN_EXE_purgewatch"));
            if let Some(deploys) = hugo_site::run(bin, tmp.path(), pages) {
                hugo_site::report(pages, &deploys);
            }
        }
        if a.hugo_only {
            return;
        }
    }
    println!(
        "site: {} files in directories of 100; debounce {} ms; repeats {}",
        a.files,
        DEBOUNCE.as_millis(),
        a.repeat
    );
    let mut tools = vec![Tool::Purgewatch, Tool::Inotifywait];
    if !a.no_scripts {
        tools.extend([Tool::Watchexec, Tool::Lsyncd, Tool::Watchman]);
    }
    if let Some(only) = &a.tools {
        tools.retain(|t| *t == Tool::Purgewatch || only.split(',').any(|o| o == t.slug()));
    }
    let passes: Vec<Pass> = tools
        .into_iter()
        .filter(|t| t.installed())
        .map(|t| run_pass(t, &a, tmp.path()))
        .collect();
    let pw = &passes[0];
    let of = |tool: Tool, storm: &str| {
        passes
            .iter()
            .find(|p| p.tool == tool)
            .and_then(|p| p.seen.iter().find(|s| s.storm == storm))
    };
    let ms = |v: &[f64]| {
        if v.is_empty() {
            "never".to_string()
        } else {
            format!("{:.0} ms / {:.0} ms", percentile(v, 0.5), percentile(v, 0.99))
        }
    };

    println!();
    println!(
        "| storm | deploy took, longest | requests | recall | precision | last write → request − debounce, p50 / p99 | purgewatch CPU s | inotifywait CPU s | CPU ratio | inotifywait events (= curls of a per-event script) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in &pw.seen {
        let (iw_cpu, iw_events) = of(Tool::Inotifywait, &s.storm).map_or((f64::NAN, f64::NAN), |i| (i.cpu, i.requests));
        println!(
            "| {} | {:.1} s | {:.1} | {:.3} | {:.3} | {} | {:.3} | {:.3} | {} | {:.0} |",
            s.storm,
            s.deploy_s.iter().copied().fold(0.0, f64::max),
            s.requests,
            s.recall,
            s.precision,
            ms(&s.overhead_ms()),
            s.cpu,
            iw_cpu,
            ratio(s.cpu, iw_cpu),
            iw_events
        );
    }
    if passes
        .iter()
        .any(|p| !matches!(p.tool, Tool::Purgewatch | Tool::Inotifywait))
    {
        // One table: each storm as purgewatch and every tool users script instead saw it.
        println!();
        println!(
            "| storm | tool | purge requests | storms covered | recall | precision | last write → covering request, p50 / p99 (debounce 1 s) | CPU s | purgewatch CPU ÷ tool CPU |"
        );
        println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
        for s in &pw.seen {
            for p in &passes {
                let Some(o) = p.seen.iter().find(|o| o.storm == s.storm) else {
                    continue;
                };
                let (requests, covered, recall, precision, latency) = match p.tool {
                    // It only prints events; a per-event script sends one full purge for each.
                    Tool::Inotifywait => {
                        let dash = || "–".to_string();
                        (format!("{:.0}", o.requests), dash(), dash(), dash(), dash())
                    }
                    _ => (
                        format!("{:.1}", o.requests),
                        format!("{}/{}", o.covered, o.repeats),
                        format!("{:.3}", o.recall),
                        format!("{:.3}", o.precision),
                        ms(&o.latency_ms),
                    ),
                };
                let tool = if p.tool == Tool::Purgewatch {
                    "**purgewatch**".to_string()
                } else {
                    p.tool.name().to_string()
                };
                println!(
                    "| {} | {tool} | {requests} | {covered} | {recall} | {precision} | {latency} | {:.3} | {} |",
                    s.storm,
                    o.cpu,
                    ratio(s.cpu, o.cpu)
                );
            }
        }
    }
    println!();
    println!("| measure | tool | figure |");
    println!("|---|---|---:|");
    println!(
        "| first start (baseline, hashes every file) | purgewatch | {:.2} s |",
        pw.start.as_secs_f64()
    );
    if let Some((files, took)) = pw.catch_up {
        println!(
            "| start-up catch-up of {files} unchanged files | purgewatch | {:.2} s |",
            took.as_secs_f64()
        );
    }
    for p in &passes {
        println!(
            "| peak RSS, site A / site B | {} | {:.1} MB / {:.1} MB |",
            p.tool.name(),
            p.rss_a_kb as f64 / 1024.0,
            p.rss_b_kb as f64 / 1024.0
        );
    }
    if let Some(w) = pw.idle_wakeups {
        println!("| idle wakeups per second over {} s | purgewatch | {w:.2} |", a.idle);
    }
    if smoke {
        check_smoke(pw);
    }
}

/// The smoke test's verdict: every storm purged, exactly the URLs whose files changed.
fn check_smoke(pw: &Pass) {
    let storms = 6 + usize::from(installed("rsync", "--version"));
    assert_eq!(pw.seen.len(), storms, "every storm ran");
    for s in &pw.seen {
        assert!(
            s.covered == s.repeats && s.recall == 1.0 && s.precision == 1.0,
            "{}: purged in {} of {} runs, recall {:.3}, precision {:.3}",
            s.storm,
            s.covered,
            s.repeats,
            s.recall,
            s.precision
        );
    }
    println!("smoke test: every storm purged exactly what changed");
}

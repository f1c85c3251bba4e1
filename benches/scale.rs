//! One daemon for a whole web host: N sites × M files (default 1,000 × 1,000: 1,000,000 files
//! in ~20,000 directories), one rules file per site through `include:`, one SiteHost and one
//! VIMS target shared by every site (the tests' fake provider). The sites live on tmpfs
//! (`/dev/shm`) when there is room, as a host's page cache would hold them.
//!
//! Measured: first start to ready (empty state) and a restart with nothing changed (warm
//! state), idle RSS and context switches over 10 s, then four deploys — (a) one site redeployed
//! by `rsync -a --delete` of a fresh build (every file with a new mtime, 1% with new bytes), (b)
//! 100 sites deploying 2 changed files each within the same second, (c) every site's tree
//! swapped by rename (`mv site site.old; mv site.new site`, 1% new bytes), (d) every site
//! rsync-redeployed at once (8 rsyncs at a time) — each with the time from the last write to
//! the last purge request, the requests per target, and the daemon's CPU seconds and peak RSS;
//! `plan` is empty at the end. Then the same deploys beside watchman (`watch-project` per site,
//! every site's changes asked for after each deploy), its CPU and memory.
//!
//! `cargo bench --bench scale [-- --sites N --files M --only a,b,c,d --no-watchman]`

#![allow(dead_code)]

#[path = "../tests/common/fake.rs"]
mod fake;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use fake::Fake;

struct Args {
    sites: usize,
    files: usize,
    /// The deploys to run (`--only a,d`): all four by default.
    only: String,
    watchman: bool,
}

fn args() -> Args {
    let argv: Vec<String> = std::env::args().collect();
    let get = |flag: &str, default: usize| {
        argv.iter()
            .position(|a| a == flag)
            .and_then(|i| argv.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    Args {
        sites: get("--sites", 1000),
        files: get("--files", 1000),
        only: argv
            .iter()
            .position(|a| a == "--only")
            .and_then(|i| argv.get(i + 1))
            .cloned()
            .unwrap_or_else(|| "a,b,c,d".into()),
        watchman: !argv.iter().any(|a| a == "--no-watchman"),
    }
}

/// File `i` of a site: 50 files a directory, each directory's first file its index.
fn page(i: usize) -> String {
    if i.is_multiple_of(50) {
        format!("s{:03}/index.html", i / 50)
    } else {
        format!("s{:03}/p{:02}.html", i / 50, i % 50)
    }
}

fn body(site: usize, i: usize, v: u32) -> String {
    format!(
        "<html><body>site {site} page {i} v{v} {}</body></html>\n",
        "lorem ipsum ".repeat(30)
    )
}

/// Writes `pages` of `root` (every page when `all`), the `changed` ones at version `v`, through
/// a temporary file renamed into place, with a new mtime.
fn deploy(root: &Path, site: usize, files: usize, changed: &[usize], all: bool, v: u32) {
    let later = SystemTime::now() + Duration::from_secs(v as u64);
    let write = |i: usize, ver: u32| {
        let p = root.join(page(i));
        let tmp = p.with_file_name(format!(".{}.tmp", i));
        std::fs::write(&tmp, body(site, i, ver)).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&tmp)
            .unwrap()
            .set_modified(later)
            .unwrap();
        std::fs::rename(&tmp, &p).unwrap();
    };
    if all {
        for i in 0..files {
            write(i, if changed.contains(&i) { v } else { 1 });
        }
    } else {
        for &i in changed {
            write(i, v);
        }
    }
}

fn proc_field(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<u64> = after.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // utime and stime (fields 14 and 15): 10 and 11 of the numbers after the state field.
    Duration::from_millis((f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0)) * 10)
}

fn switches(pid: u32) -> u64 {
    // Every thread's voluntary and involuntary context switches.
    let mut n = 0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let s = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
            for l in s.lines() {
                if l.starts_with("voluntary_ctxt_switches") || l.starts_with("nonvoluntary_ctxt_switches") {
                    n += l
                        .split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0);
                }
            }
        }
    }
    n
}

struct Running {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Running {
    fn start(rules: &Path) -> (Running, Duration) {
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_purgewatch"))
            .args(["run", "-c"])
            .arg(rules)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if line.contains(" ready: ") {
                    let _ = tx.send(());
                }
                l.lock().unwrap().push(line);
            }
        });
        rx.recv_timeout(Duration::from_secs(600)).expect("ready");
        (Running { child, log }, started.elapsed())
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
        let _ = self.child.wait();
    }
}

/// Waits for a first new request (at most 10 minutes), then until the fake has had no new
/// request for `quiet`; returns when the last one came (as the fake recorded it).
fn quiet(fake: &Fake, quiet: Duration) -> Instant {
    let mut last = fake.requests().len();
    let end = Instant::now() + Duration::from_secs(600);
    while fake.requests().len() == last && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    last = fake.requests().len();
    let mut at = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let n = fake.requests().len();
        if n != last {
            last = n;
            at = Instant::now();
        } else if at.elapsed() >= quiet {
            return fake.requests().iter().map(|r| r.at).max().unwrap_or(at);
        }
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let a = args();
    let base = if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let dir = base.path();
    let fake = Fake::start();
    let made = Instant::now();
    let roots: Vec<PathBuf> = (0..a.sites).map(|s| dir.join(format!("sites/site{s:04}"))).collect();
    std::fs::create_dir_all(dir.join("rules.d")).unwrap();
    for (s, root) in roots.iter().enumerate() {
        for i in 0..a.files {
            let p = root.join(page(i));
            if i.is_multiple_of(50) {
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            }
            std::fs::write(p, body(s, i, 1)).unwrap();
        }
        std::fs::write(
            dir.join(format!("rules.d/site{s:04}.yaml")),
            format!(
                "rules:\n  - name: site{s:04}\n    watch: {}\n    targets: [www, cdn]\n    url_prefix: /site{s:04}/\n",
                root.display()
            ),
        )
        .unwrap();
    }
    let rules = dir.join("rules.yaml");
    std::fs::write(
        &rules,
        format!(
            "include: [rules.d/*.yaml]\nstate_dir: {}\ndefaults:\n  debounce: 1s\n  max_delay: 30s\ntargets:\n  www:\n    type: sitehost\n    api_url: {}\n    api_key: k\n    client_id: 1\n    server: s\n    stack: st\n  cdn:\n    type: vims\n    api_url: {}\n    token: t\n    cdn_id: 7\n    host: all\n",
            dir.join("state").display(),
            fake.sitehost_url(),
            fake.vims_url()
        ),
    )
    .unwrap();
    println!(
        "host: {} sites × {} files = {} files in {} directories, on {}; made in {:.1} s",
        a.sites,
        a.files,
        a.sites * a.files,
        a.sites * (a.files.div_ceil(50) + 1),
        if dir.starts_with("/dev/shm") {
            "tmpfs"
        } else {
            "the disk"
        },
        made.elapsed().as_secs_f64()
    );
    println!();
    println!("| measure | figure |");
    println!("|---|---|");
    let (d, first) = Running::start(&rules);
    println!("| first start (empty state) → ready | {:.2} s |", first.as_secs_f64());
    println!(
        "| peak RSS during the first start | {} MB |",
        proc_field(d.pid(), "VmHWM") / 1024
    );
    std::thread::sleep(Duration::from_secs(3));
    let s0 = switches(d.pid());
    let c0 = cpu(d.pid());
    std::thread::sleep(Duration::from_secs(10));
    println!(
        "| idle: RSS; context switches a second; CPU over 10 s | {} MB; {:.1}; {:.2} s |",
        proc_field(d.pid(), "VmRSS") / 1024,
        switches(d.pid()).saturating_sub(s0) as f64 / 10.0,
        (cpu(d.pid()) - c0).as_secs_f64()
    );
    d.stop();
    let (d, warm) = Running::start(&rules);
    println!(
        "| restart with nothing changed (warm state) → ready | {:.2} s |",
        warm.as_secs_f64()
    );
    println!(
        "| idle RSS after the warm start | {} MB |",
        proc_field(d.pid(), "VmRSS") / 1024
    );

    let deploys = Deploys {
        dir: dir.to_path_buf(),
        roots: roots.clone(),
        files: a.files,
    };
    let one_percent: Vec<usize> = (0..a.files).filter(|i| i % 100 == 3).collect();
    let hundred: Vec<usize> = (0..a.sites.min(100)).map(|s| s * a.sites / a.sites.min(100)).collect();
    let every: Vec<usize> = (0..a.sites).collect();
    let storm = |name: &str, v: u32, deploy: &dyn Fn(u32) -> Duration, sites: &[usize], changed: &[usize]| {
        let before = (fake.sitehost_purges().len(), fake.vims_purges().len());
        let c0 = cpu(d.pid());
        let took = deploy(v);
        let last_write = Instant::now();
        let last = quiet(&fake, Duration::from_secs(5));
        println!(
            "| {name}: written in {:.2} s; last write → last purge request | {:.2} s |",
            took.as_secs_f64(),
            last.saturating_duration_since(last_write).as_secs_f64()
        );
        let cpu_s = (cpu(d.pid()) - c0).as_secs_f64();
        let vims = fake.vims_purges()[before.1..].to_vec();
        println!(
            "| {name}: requests SiteHost + VIMS; daemon CPU; peak RSS so far | {} + {}; {cpu_s:.2} s; {} MB |",
            fake.sitehost_purges().len() - before.0,
            vims.len(),
            proc_field(d.pid(), "VmHWM") / 1024
        );
        println!(
            "| {name}: recall of the VIMS patterns (files with new bytes whose URL one matches); `plan` after | {:.3}; {} |",
            recall(&vims, sites, changed),
            if plan_empty(&rules) { "empty" } else { "NOT EMPTY" }
        );
    };
    let seven = [7];
    let two = [1, 2];
    let storms: Vec<(&str, Storm, &[usize], &[usize])> = vec![
        (
            "(a) one site redeployed (rsync of a fresh build, 1% new)",
            Box::new(|v| deploys.rsync(&seven, &one_percent, v)),
            &seven,
            &one_percent,
        ),
        (
            "(b) 100 sites deploying 2 files each",
            Box::new(|v| deploys.files(&hundred, &two, v)),
            &hundred,
            &two,
        ),
        (
            "(c) every site's tree swapped by rename (1% new)",
            Box::new(|v| deploys.swap(&every, &one_percent, v)),
            &every,
            &one_percent,
        ),
        (
            "(d) every site redeployed at once (rsync of fresh builds, 1% new)",
            Box::new(|v| deploys.rsync(&every, &one_percent, v)),
            &every,
            &one_percent,
        ),
    ];
    let storms: Vec<_> = storms
        .into_iter()
        .filter(|(name, ..)| a.only.split(',').any(|o| name.starts_with(&format!("({o})"))))
        .collect();
    let mut v = 2;
    for (name, deploy, sites, changed) in &storms {
        storm(name, v, deploy.as_ref(), sites, changed);
        deploys.clean();
        v += 1;
    }
    let log = d.log.lock().unwrap().clone();
    let count = |what: &str| log.iter().filter(|l| l.contains(what)).count();
    println!(
        "| rescans after an overflow: of the kernel's queue; of the daemon's own | {}; {} |",
        count("the kernel event queue overflowed"),
        count("fell behind")
    );
    d.stop();
    if !a.watchman || !installed("watchman") {
        println!("\nwatchman is not installed: no comparison");
        return;
    }
    println!();
    println!(
        "watchman {}, `watch-project` per site, the same deploys; after each, every site's changes asked for (`since` a named cursor, as a purging tool built on it would):",
        version("watchman")
    );
    println!();
    println!("| measure | figure |");
    println!("|---|---|");
    let w = Watchman::start(dir, &roots);
    println!(
        "| watch-project of every site → all crawled | {:.2} s |",
        w.ready.as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(3));
    let (s0, c0) = (switches(w.pid()), cpu(w.pid()));
    std::thread::sleep(Duration::from_secs(10));
    println!(
        "| idle: RSS; context switches a second; CPU over 10 s | {} MB; {:.1}; {:.2} s |",
        proc_field(w.pid(), "VmRSS") / 1024,
        switches(w.pid()).saturating_sub(s0) as f64 / 10.0,
        (cpu(w.pid()) - c0).as_secs_f64()
    );
    for (name, deploy, ..) in &storms {
        let c0 = cpu(w.pid());
        let took = deploy(v);
        let last_write = Instant::now();
        let swapped = name.contains("swapped");
        let changed = w.changes(swapped);
        println!(
            "| {name}: written in {:.2} s; last write → every site's changes listed | {:.2} s |",
            took.as_secs_f64(),
            last_write.elapsed().as_secs_f64()
        );
        println!(
            "| {name}: files listed; watchman CPU; peak RSS so far | {changed}; {:.2} s; {} MB |",
            (cpu(w.pid()) - c0).as_secs_f64(),
            proc_field(w.pid(), "VmHWM") / 1024
        );
        deploys.clean();
        v += 1;
    }
    w.stop();
}

/// The share of the files with new bytes (`changed` of each of `sites`) whose URL one of the
/// VIMS `purges` matches.
fn recall(purges: &[fake::Recorded], sites: &[usize], changed: &[usize]) -> f64 {
    let patterns: Vec<regex::Regex> = purges
        .iter()
        .filter_map(|r| regex::Regex::new(&r.pattern()).ok())
        .collect();
    let urls: Vec<String> = sites
        .iter()
        .flat_map(|s| {
            changed
                .iter()
                .map(move |&i| format!("https://www.example.com/site{s:04}/{}", page(i)))
        })
        .collect();
    let covered = urls.iter().filter(|u| patterns.iter().any(|p| p.is_match(u))).count();
    covered as f64 / urls.len().max(1) as f64
}

/// Waits until `status` shows nothing pending for any target (at most 10 minutes), then asks
/// `plan` whether anything differs from the record.
fn plan_empty(rules: &Path) -> bool {
    let idle = Instant::now();
    loop {
        let st = Command::new(env!("CARGO_BIN_EXE_purgewatch"))
            .args(["status", "--json", "-c"])
            .arg(rules)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap_or_default();
        let pending: i64 = v["targets"]
            .as_object()
            .map(|t| t.values().map(|t| t["pending_files"].as_i64().unwrap_or(1)).sum())
            .unwrap_or(1);
        if pending == 0 || idle.elapsed() > Duration::from_secs(600) {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let plan = Command::new(env!("CARGO_BIN_EXE_purgewatch"))
        .args(["plan", "-c"])
        .arg(rules)
        .output()
        .unwrap();
    String::from_utf8_lossy(&plan.stdout)
        .lines()
        .filter(|l| l.starts_with("target "))
        .all(|l| l.contains(": 0 files, 0 requests"))
}

fn installed(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn version(cmd: &str) -> String {
    Command::new(cmd)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// A deploy of version `v`, returning how long its writes took.
type Storm<'a> = Box<dyn Fn(u32) -> Duration + 'a>;

/// The deploys, the same for purgewatch and watchman.
struct Deploys {
    dir: PathBuf,
    roots: Vec<PathBuf>,
    files: usize,
}

impl Deploys {
    /// A fresh build of `site` at `to`: every file written now, the `changed` ones at version
    /// `v` (the others hold the bytes they had).
    fn build(&self, to: &Path, site: usize, changed: &[usize], v: u32) {
        for i in 0..self.files {
            let p = to.join(page(i));
            if i.is_multiple_of(50) {
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            }
            let ver = if changed.contains(&i) { v } else { 1 };
            std::fs::write(p, body(site, i, ver)).unwrap();
        }
    }

    /// `sites` rebuilt elsewhere (untimed), then copied over with `rsync -a --delete`, 8 at a
    /// time (without rsync: every file written through a temporary name and a rename, as rsync
    /// does). Returns how long the copies took.
    fn rsync(&self, sites: &[usize], changed: &[usize], v: u32) -> Duration {
        if !installed("rsync") {
            let started = Instant::now();
            for &s in sites {
                deploy(&self.roots[s], s, self.files, changed, true, v);
            }
            return started.elapsed();
        }
        let builds = self.dir.join("builds");
        for &s in sites {
            self.build(&builds.join(format!("site{s:04}")), s, changed, v);
        }
        let started = Instant::now();
        let mut running: Vec<Child> = Vec::new();
        for &s in sites {
            if running.len() == 8 {
                let mut first = running.remove(0);
                assert!(first.wait().unwrap().success(), "rsync");
            }
            running.push(
                Command::new("rsync")
                    .args(["-a", "--delete"])
                    .arg(format!("{}/", builds.join(format!("site{s:04}")).display()))
                    .arg(format!("{}/", self.roots[s].display()))
                    .spawn()
                    .unwrap(),
            );
        }
        for mut c in running {
            assert!(c.wait().unwrap().success(), "rsync");
        }
        started.elapsed()
    }

    /// `changed` files of each of `sites` rewritten in place (through a temporary name).
    fn files(&self, sites: &[usize], changed: &[usize], v: u32) -> Duration {
        let started = Instant::now();
        for &s in sites {
            deploy(&self.roots[s], s, self.files, changed, false, v);
        }
        started.elapsed()
    }

    /// Each of `sites` built anew beside its tree (untimed), then swapped in: `mv site
    /// site.old; mv site.new site`, every site within the same second or so.
    fn swap(&self, sites: &[usize], changed: &[usize], v: u32) -> Duration {
        for &s in sites {
            self.build(&self.roots[s].with_extension("new"), s, changed, v);
        }
        let started = Instant::now();
        for &s in sites {
            let root = &self.roots[s];
            std::fs::rename(root, root.with_extension("old")).unwrap();
            std::fs::rename(root.with_extension("new"), root).unwrap();
        }
        started.elapsed()
    }

    /// Removes what the deploys left beside the sites (builds, old trees).
    fn clean(&self) {
        let _ = std::fs::remove_dir_all(self.dir.join("builds"));
        for r in &self.roots {
            let _ = std::fs::remove_dir_all(r.with_extension("old"));
        }
    }
}

/// A private watchman server watching every site (`watch-project`), asked through its socket.
struct Watchman {
    child: Child,
    sock: PathBuf,
    roots: Vec<PathBuf>,
    ready: Duration,
    /// The kernel's inotify instance limit before the bench raised it (watchman takes one
    /// instance per watched root).
    instances_were: Option<String>,
}

impl Watchman {
    fn start(dir: &Path, roots: &[PathBuf]) -> Watchman {
        let limit = "/proc/sys/fs/inotify/max_user_instances";
        let was = std::fs::read_to_string(limit).unwrap_or_default();
        let need = roots.len() + 128;
        let instances_were = (was.trim().parse::<usize>().unwrap_or(0) < need)
            .then(|| {
                std::fs::write(limit, need.to_string())
                    .ok()
                    .map(|_| was.trim().to_string())
            })
            .flatten();
        if let Some(w) = &instances_were {
            println!(
                "(fs.inotify.max_user_instances raised from {w} to {need} for watchman: one instance per watched root)\n"
            );
        }
        let w = dir.join("watchman");
        std::fs::create_dir_all(&w).unwrap();
        let sock = w.join("sock");
        let child = Command::new("watchman")
            .args(["--foreground", "--no-save-state"])
            .arg(format!("--sockname={}", sock.display()))
            .arg(format!("--logfile={}", w.join("log").display()))
            .arg(format!("--pidfile={}", w.join("pid").display()))
            .arg(format!("--statefile={}", w.join("state").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let end = Instant::now() + Duration::from_secs(60);
        while !sock.exists() {
            assert!(Instant::now() < end, "watchman did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut w = Watchman {
            child,
            sock,
            roots: roots.to_vec(),
            ready: Duration::ZERO,
            instances_were,
        };
        let started = Instant::now();
        w.watch_all();
        w.changes(false);
        w.ready = started.elapsed();
        w
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn ask(&self, conn: &mut BufReader<std::os::unix::net::UnixStream>, cmd: serde_json::Value) -> serde_json::Value {
        let v = self.send(conn, cmd.clone());
        assert!(v.get("error").is_none(), "watchman {cmd}: {v}");
        v
    }

    fn send(&self, conn: &mut BufReader<std::os::unix::net::UnixStream>, cmd: serde_json::Value) -> serde_json::Value {
        use std::io::Write;
        let mut line = cmd.to_string();
        line.push('\n');
        conn.get_mut().write_all(line.as_bytes()).unwrap();
        let mut reply = String::new();
        conn.read_line(&mut reply).unwrap();
        serde_json::from_str(&reply).unwrap_or_default()
    }

    fn connect(&self) -> BufReader<std::os::unix::net::UnixStream> {
        BufReader::new(std::os::unix::net::UnixStream::connect(&self.sock).unwrap())
    }

    fn watch_all(&self) {
        let mut c = self.connect();
        for r in &self.roots {
            self.ask(&mut c, serde_json::json!(["watch-project", r]));
        }
    }

    /// Every site's changes since the last call (a named cursor), after a sync with the
    /// kernel's events; after a swap, every site is watched again first (watchman drops a root
    /// renamed away). Returns how many files were listed.
    fn changes(&self, rewatch: bool) -> usize {
        if rewatch {
            let mut c = self.connect();
            for r in &self.roots {
                // Watchman may have dropped the root itself (it was renamed away).
                let _ = self.send(&mut c, serde_json::json!(["watch-del", r]));
            }
            self.watch_all();
        }
        let mut c = self.connect();
        let mut n = 0;
        for r in &self.roots {
            let v = self.ask(
                &mut c,
                serde_json::json!(["query", r, {"since": "n:purge", "fields": ["name", "exists"], "sync_timeout": 600000}]),
            );
            n += v["files"].as_array().map_or(0, |f| f.len());
        }
        n
    }

    fn stop(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
        let _ = self.child.wait();
        if let Some(w) = &self.instances_were {
            let _ = std::fs::write("/proc/sys/fs/inotify/max_user_instances", w);
        }
    }
}

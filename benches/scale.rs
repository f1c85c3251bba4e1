//! One daemon for a whole web host: N sites × M files (default 1,000 × 1,000: 1,000,000 files
//! in ~20,000 directories), one rules file per site through `include:`, one SiteHost and one
//! VIMS target shared by every site (the tests' fake provider). The sites live on tmpfs
//! (`/dev/shm`) when there is room, as a host's page cache would hold them.
//!
//! Measured: first start to ready (empty state) and a restart with nothing changed (warm
//! state), idle RSS and context switches over 10 s, then three deploys — one site redeployed (every
//! file rewritten, 1% with new bytes, through a temporary file and a rename, as rsync does), 100
//! sites deployed within the same second (2 changed files each), and every site redeployed at
//! once — each with the time from the last write to the last purge request, the requests per
//! target, and the daemon's CPU seconds and peak RSS; `plan` is empty at the end.
//!
//! `cargo bench --bench scale [-- --sites N --files M]`

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
/// request for `quiet`; returns when the last one came.
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
            return at;
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

    let storm = |name: &str, sites: &[usize], changed: &[usize], all: bool, v: u32| {
        let before = (fake.sitehost_purges().len(), fake.vims_purges().len());
        let c0 = cpu(d.pid());
        let started = Instant::now();
        for &s in sites {
            deploy(&roots[s], s, a.files, changed, all, v);
        }
        let last_write = Instant::now();
        let last = quiet(&fake, Duration::from_secs(5));
        println!(
            "| {name}: written in {:.2} s; last write → last purge request | {:.2} s |",
            (last_write - started).as_secs_f64(),
            last.saturating_duration_since(last_write).as_secs_f64()
        );
        println!(
            "| {name}: requests SiteHost + VIMS; daemon CPU; peak RSS so far | {} + {}; {:.2} s; {} MB |",
            fake.sitehost_purges().len() - before.0,
            fake.vims_purges().len() - before.1,
            (cpu(d.pid()) - c0).as_secs_f64(),
            proc_field(d.pid(), "VmHWM") / 1024
        );
    };
    let one_percent: Vec<usize> = (0..a.files).filter(|i| i % 100 == 3).collect();
    storm(
        "one site redeployed (all rewritten, 1% new)",
        &[7],
        &one_percent,
        true,
        2,
    );
    let hundred: Vec<usize> = (0..a.sites.min(100)).map(|s| s * a.sites / a.sites.min(100)).collect();
    storm("100 sites deploying 2 files each", &hundred, &[1, 2], false, 3);
    let every: Vec<usize> = (0..a.sites).collect();
    storm(
        "every site redeployed at once (all rewritten, 1% new)",
        &every,
        &one_percent,
        true,
        4,
    );
    // Idle: nothing pending for any target (the state says so), then `plan`.
    let idle = Instant::now();
    loop {
        let st = Command::new(env!("CARGO_BIN_EXE_purgewatch"))
            .args(["status", "--json", "-c"])
            .arg(&rules)
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
        .arg(&rules)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&plan.stdout);
    let empty = out
        .lines()
        .filter(|l| l.starts_with("target "))
        .all(|l| l.contains(": 0 files, 0 requests"));
    println!(
        "| `plan` after the storms | {} |",
        if empty { "empty" } else { "NOT EMPTY" }
    );
    let rescans = d.log.lock().unwrap().iter().filter(|l| l.contains("rescan")).count();
    println!("| log lines about rescans (an overflow) | {rescans} |");
    d.stop();
}

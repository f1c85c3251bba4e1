//! purgewatch in front of real caches: a 10,000-page site behind a fleet of two Varnish caches
//! (mode `ban`, then mode `purge`) and behind one nginx with ngx_cache_purge, rebuilt and
//! deployed with `rsync -a --delete` (every file rewritten with a new mtime, 1% with new bytes).
//! Beside it, what people run today: `inotifywait -m -r` with a ban of everything per event (as
//! `inotifywait … | while read; do varnishadm ban req.url '~' .; done` does; sent here as the
//! shipped VCL's HTTP BAN of `.*`, in-process, which is cheaper than a process per event).
//!
//! For each: purge requests per cache, time from the end of the rsync until every changed page
//! serves its new bytes through every cache, and how many of the 10,000 pages each cache had to
//! fetch again from the origin afterwards (the purge's collateral: 100 is exact, 10,000 is all).
//!
//! `cargo bench --bench caches [-- --files N --changed-every K]` (needs varnish, nginx,
//! libnginx-mod-http-cache-purge, rsync and inotify-tools).

#![allow(dead_code)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::caches::{self, Cache};
use common::{DEADLINE, wait_until};

const HOST: &str = "www.example.com";

struct Args {
    files: usize,
    changed_every: usize,
}

fn args() -> Args {
    let mut a = Args {
        files: 10_000,
        changed_every: 100,
    };
    let argv: Vec<String> = std::env::args().collect();
    for (i, w) in argv.iter().enumerate() {
        let next = || argv.get(i + 1).and_then(|v| v.parse().ok());
        match w.as_str() {
            "--files" => a.files = next().unwrap_or(a.files),
            "--changed-every" => a.changed_every = next().unwrap_or(a.changed_every),
            _ => {}
        }
    }
    a
}

/// The page at index `i`: 100 a directory.
fn page(i: usize) -> String {
    format!("d{:03}/p{:02}.html", i / 100, i % 100)
}

fn body(i: usize, version: u32) -> String {
    format!(
        "<html><body><h1>page {i} v{version}</h1>{}</body></html>\n",
        "lorem ipsum ".repeat(45)
    )
}

/// Writes the site (every page at `version`, but the changed ones at `version + 1` when `bump`).
fn build(dir: &Path, a: &Args, bump: bool) {
    for i in 0..a.files {
        let p = dir.join(page(i));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let v = if bump && i % a.changed_every == 0 { 2 } else { 1 };
        std::fs::write(p, body(i, v)).unwrap();
    }
}

fn get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET /{path} HTTP/1.0\r\nHost: {HOST}\r\n\r\n").unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    raw.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// Visits every page through `cache` on 4 threads.
fn visit_all(cache: &Cache, files: usize) {
    let port = cache.port;
    std::thread::scope(|s| {
        for t in 0..4 {
            s.spawn(move || {
                for i in (t..files).step_by(4) {
                    get(port, &page(i));
                }
            });
        }
    });
}

fn ban(port: u16, regex: &str) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "BAN / HTTP/1.0\r\nHost: {HOST}\r\nX-Ban-Regex: {regex}\r\n\r\n").unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Setup {
    VarnishBan,
    VarnishPurge,
    Nginx,
    InotifywaitBanAll,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::VarnishBan => "purgewatch → 2 × Varnish, mode ban",
            Setup::VarnishPurge => "purgewatch → 2 × Varnish, mode purge",
            Setup::Nginx => "purgewatch → nginx (ngx_cache_purge)",
            Setup::InotifywaitBanAll => "inotifywait → 2 × Varnish, ban everything per event",
        }
    }
}

struct Outcome {
    setup: Setup,
    /// Per cache.
    requests: Vec<usize>,
    fresh_after: Duration,
    refetched: Vec<usize>,
    cpu: Duration,
}

/// BAN and PURGE requests the Varnish at `port` (run in `dir`) has executed, by `varnishstat`.
fn varnish_purges(dir: &Path, port: u16) -> usize {
    let out = Command::new("varnishstat")
        .arg("-n")
        .arg(dir.join(format!("varnish-{port}")))
        .args(["-1", "-f", "MAIN.bans_added", "-f", "MAIN.n_purges"])
        .output()
        .expect("varnishstat");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<usize>().ok())
        .sum()
}

/// The nginx purge requests purgewatch sent, from its log lines (`…: N URLs`, one GET each).
fn nginx_purges(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("INFO purged target="))
        .map(|l| {
            l.split(": ")
                .nth(1)
                .and_then(|t| t.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(1)
        })
        .sum()
}

fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<u64> = after.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // utime and stime are fields 14 and 15: 10 and 11 of the numbers after the state field.
    let ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn metric_sum(addr: &str, prefix: &str) -> Vec<(String, usize)> {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    raw.lines()
        .filter(|l| l.starts_with(prefix) && l.contains("outcome=\"accepted\""))
        .filter_map(|l| {
            let target = l.split("target=\"").nth(1)?.split('"').next()?.to_string();
            let n: f64 = l.rsplit(' ').next()?.parse().ok()?;
            Some((target, n as usize))
        })
        .collect()
}

fn run(setup: Setup, a: &Args, tmp: &Path) -> Outcome {
    let dir = tmp.join(format!("{setup:?}"));
    let public = dir.join("public");
    let next = dir.join("next");
    std::fs::create_dir_all(&public).unwrap();
    build(&public, a, false);
    build(&next, a, true);
    // The rebuild is newer: rsync's quick check (size and mtime) sees every page as changed, as
    // after a real rebuild.
    let later = std::time::SystemTime::now() + Duration::from_secs(300);
    for i in 0..a.files {
        let f = std::fs::File::options().write(true).open(next.join(page(i))).unwrap();
        f.set_modified(later).unwrap();
    }
    let (origin, served) = caches::counted_origin(public.clone());
    let mut fleet: Vec<Cache> = match setup {
        Setup::Nginx => vec![caches::nginx(&dir, origin)],
        _ => (0..2)
            .map(|_| caches::varnish_with(&dir, origin, "malloc,512m"))
            .collect(),
    };
    for c in &fleet {
        visit_all(c, a.files);
    }
    let warmed = served.load(Ordering::Relaxed);
    assert!(warmed >= a.files, "the origin served {warmed}");

    // The tool.
    let endpoints: Vec<String> = fleet.iter().map(|c| c.endpoint.clone()).collect();
    let mut daemon: Option<common::Daemon> = None;
    let stats_before: Vec<usize> = match setup {
        Setup::Nginx => vec![0],
        _ => fleet.iter().map(|c| varnish_purges(&dir, c.port)).collect(),
    };
    let banned = Arc::new(AtomicUsize::new(0));
    let mut watcher: Option<Child> = None;
    if setup == Setup::InotifywaitBanAll {
        let mut child = Command::new("inotifywait")
            .args(["-m", "-r", "-q", "-e", "close_write,moved_to,moved_from,create,delete"])
            .arg(&public)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("inotifywait (apt-get install inotify-tools)");
        let out = child.stdout.take().unwrap();
        let ports: Vec<u16> = fleet.iter().map(|c| c.port).collect();
        let banned = banned.clone();
        std::thread::spawn(move || {
            for _ in BufReader::new(out).lines().map_while(Result::ok) {
                for &p in &ports {
                    ban(p, ".*");
                    banned.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        // inotifywait says nothing when its watches are set up: give it its start.
        std::thread::sleep(Duration::from_secs(2));
        watcher = Some(child);
    } else {
        let target = match setup {
            Setup::Nginx => format!(
                "  cache:\n    type: nginx\n    endpoints: [{}]\n    purge_location: /purge\n    host: {HOST}\n",
                endpoints.join(", ")
            ),
            _ => format!(
                "  cache:\n    type: varnish\n    endpoints: [{}]\n    mode: {}\n    host: {HOST}\n",
                endpoints.join(", "),
                if setup == Setup::VarnishBan { "ban" } else { "purge" }
            ),
        };
        let rules = format!(
            "state_dir: {}\nmetrics_listen: 127.0.0.1:0\ndefaults:\n  debounce: 1s\ntargets:\n{target}rules:\n  - name: site\n    watch: {}\n    targets: [cache]\n",
            dir.join("state").display(),
            public.display()
        );
        std::fs::write(dir.join("rules.yaml"), rules).unwrap();
        let mut cmd = Command::new(common::bin());
        cmd.args(["run", "-c"])
            .arg(dir.join("rules.yaml"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let d = common::Daemon::spawn(cmd);
        // Ready: the baseline is taken (a deploy before it would be the baseline).
        d.wait_ready();
        daemon = Some(d);
    }
    let cpu_before = daemon.as_ref().map(|d| cpu_of(d.child.id())).unwrap_or_default();

    // The deploy.
    let st = Command::new("rsync")
        .args(["-a", "--delete"])
        .arg(format!("{}/", next.display()))
        .arg(format!("{}/", public.display()))
        .status()
        .expect("rsync (apt-get install rsync)");
    assert!(st.success());
    let done = Instant::now();
    let changed: Vec<usize> = (0..a.files).step_by(a.changed_every).collect();
    let ok = wait_until(DEADLINE, || {
        fleet.iter().all(|c| {
            changed
                .iter()
                .all(|&i| get(c.port, &page(i)).contains(&format!("page {i} v2")))
        })
    });
    assert!(ok, "{setup:?}: the caches did not serve the new bytes");
    let fresh_after = done.elapsed();
    // Quiet: every purge sent (the tool's requests stop growing for 3 s).
    let count = |daemon: &Option<common::Daemon>| -> Vec<usize> {
        match setup {
            Setup::Nginx => vec![nginx_purges(&daemon.as_ref().map(|d| d.log()).unwrap_or_default())],
            _ => fleet
                .iter()
                .zip(&stats_before)
                .map(|(c, before)| varnish_purges(&dir, c.port) - before)
                .collect(),
        }
    };
    let mut last = count(&daemon);
    let mut still = Instant::now();
    while still.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(200));
        let now = count(&daemon);
        if now != last {
            last = now;
            still = Instant::now();
        }
    }
    let cpu = daemon.as_ref().map(|d| cpu_of(d.child.id())).unwrap_or_default() - cpu_before;
    // The collateral: what each cache fetches again when every page is visited (the changed
    // pages were fetched already, by the wait above).
    let mut refetched = Vec::new();
    for c in &fleet {
        let before = served.load(Ordering::Relaxed);
        visit_all(c, a.files);
        refetched.push(served.load(Ordering::Relaxed) - before);
    }
    drop(daemon);
    if let Some(mut w) = watcher {
        let _ = w.kill();
        let _ = w.wait();
    }
    for c in &mut fleet {
        c.stop();
    }
    Outcome {
        setup,
        requests: last,
        fresh_after,
        refetched,
        cpu,
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let a = args();
    let tmp = tempfile::tempdir().unwrap();
    println!(
        "site: {} pages in directories of 100, ~600 bytes each; deploy: rsync -a --delete of a rebuild (every page rewritten, 1 in {} with new bytes: {} pages); debounce 1 s",
        a.files,
        a.changed_every,
        a.files.div_ceil(a.changed_every)
    );
    println!();
    println!(
        "| setup | purge requests per cache | rsync end → new bytes everywhere | unchanged pages refetched per cache | purgewatch CPU |"
    );
    println!("|---|---|---|---|---|");
    for setup in [
        Setup::VarnishBan,
        Setup::VarnishPurge,
        Setup::Nginx,
        Setup::InotifywaitBanAll,
    ] {
        let o = run(setup, &a, tmp.path());
        let list = |v: &[usize]| v.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(" / ");
        println!(
            "| {} | {} | {:.2} s | {} of {} | {} |",
            o.setup.name(),
            list(&o.requests),
            o.fresh_after.as_secs_f64(),
            list(&o.refetched),
            a.files,
            if o.setup == Setup::InotifywaitBanAll {
                "—".to_string()
            } else {
                format!("{:.2} s", o.cpu.as_secs_f64())
            }
        );
    }
}

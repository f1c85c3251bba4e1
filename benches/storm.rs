//! End-to-end deploy storms: the release binary against the local fake provider, side by side
//! with `inotifywait -m -r` (the floor for the cost of watching) on the same storms.
//!
//! ```text
//! cargo bench --bench storm                      # 20,000 files
//! cargo bench --bench storm -- --files 100000    # 100,000 files
//! cargo bench --bench storm -- --idle 30 --repeat 5
//! ```
//!
//! Per storm it reports: provider requests, recall and precision of the purged URLs (against the
//! files whose bytes really changed, index aliases included), the time from the last write to the
//! first purge request minus the debounce (p50/p99 over the repeats), the daemon's CPU seconds,
//! and for inotifywait its CPU seconds and the events it printed (what a one-curl-per-event
//! script would send). Then peak RSS and idle wakeups per second (context switches of every
//! thread while nothing changes).

#[path = "../tests/common/fake.rs"]
mod fake;

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
}

fn args() -> Args {
    let mut a = Args {
        files: 20_000,
        idle: 30,
        repeat: 5,
    };
    let v: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < v.len() {
        let next = || v.get(i + 1).and_then(|s| s.parse().ok());
        match v[i].as_str() {
            "--files" => a.files = next().expect("--files N"),
            "--idle" => a.idle = next().expect("--idle SECONDS") as u64,
            "--repeat" => a.repeat = next().expect("--repeat N"),
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

/// CPU seconds (user + system) of a process, from /proc.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
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

fn purges(fake: &Fake) -> Vec<Recorded> {
    let mut v = fake.sitehost_purges();
    v.extend(fake.vims_purges());
    v.sort_by_key(|r| r.at);
    v
}

/// Waits until purge requests stop arriving (none for debounce + 1.5 s) after at least one came.
fn settle(fake: &Fake, before: usize) -> Vec<Recorded> {
    let end = Instant::now() + Duration::from_secs(600);
    let mut last_n = before;
    let mut quiet_since = Instant::now();
    loop {
        let n = purges(fake).len();
        if n != last_n {
            last_n = n;
            quiet_since = Instant::now();
        }
        if n > before && quiet_since.elapsed() > DEBOUNCE + Duration::from_millis(1500) {
            return purges(fake)[before..].to_vec();
        }
        assert!(Instant::now() < end, "no purge arrived");
        std::thread::sleep(Duration::from_millis(5));
    }
}

struct Row {
    name: String,
    requests: usize,
    recall: f64,
    precision: f64,
    overhead_ms: Vec<f64>,
    cpu: f64,
    inotify_cpu: f64,
    inotify_events: u64,
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
            "state_dir: {}\ndefaults:\n  debounce: {}ms\n  max_delay: 60s\ntargets:\n  www:\n    type: sitehost\n    api_url: {}\n    api_key: bench\n    client_id: 1\n    server: s\n    stack: x\n  cdn:\n    type: vims\n    api_url: {}\n    token: bench\n    cdn_id: 7\nrules:\n  - name: site\n    watch: {watch}\n    targets: [www, cdn]\n    exclude: [\"**/.*\"]\n",
            dir.join("state").display(),
            DEBOUNCE.as_millis(),
            fake.sitehost_url(),
            fake.vims_url()
        ),
    )
    .unwrap();
    p
}

fn start(rules: &Path, watch_root: &Path) -> (Proc, Proc, Duration) {
    let t0 = Instant::now();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_purgewatch"));
    cmd.args(["run", "-c"]).arg(rules).env("RUST_LOG", "info");
    let d = Proc::spawn(cmd, true);
    d.wait_line("ready", Duration::from_secs(600));
    let startup = t0.elapsed();
    let mut cmd = Command::new("inotifywait");
    cmd.args(["-m", "-r", "-q", "--format", "%e %w%f"]).arg(watch_root);
    let iw = Proc::spawn(cmd, false);
    std::thread::sleep(Duration::from_secs(2)); // inotifywait prints nothing when its watches are set
    (d, iw, startup)
}

fn run_storm(
    name: &str,
    site: &mut Site,
    fake: &Fake,
    d: &Proc,
    iw: &Proc,
    repeat: usize,
    mut storm: impl FnMut(&mut Site, usize) -> Vec<usize>,
) -> Row {
    let (cpu0, icpu0, iev0) = (cpu_secs(d.pid()), cpu_secs(iw.pid()), iw.count.load(Ordering::Relaxed));
    let mut overhead = Vec::new();
    let (mut requests, mut recall, mut precision) = (0, 0.0, 0.0);
    for r in 0..repeat {
        let before = purges(fake).len();
        let changed = storm(site, r);
        let last_write = Instant::now();
        let reqs = settle(fake, before);
        let first = reqs.iter().map(|q| q.at).min().unwrap();
        overhead.push((first.saturating_duration_since(last_write).as_secs_f64() - DEBOUNCE.as_secs_f64()) * 1000.0);
        requests += reqs.len();
        let (rc, pr) = score(site, &changed, &reqs);
        recall += rc;
        precision += pr;
    }
    let n = repeat as f64;
    Row {
        name: name.into(),
        requests: (requests as f64 / n).round() as usize,
        recall: recall / n,
        precision: precision / n,
        overhead_ms: overhead,
        cpu: (cpu_secs(d.pid()) - cpu0) / n,
        inotify_cpu: (cpu_secs(iw.pid()) - icpu0) / n,
        inotify_events: (iw.count.load(Ordering::Relaxed) - iev0) / repeat as u64,
    }
}

fn write_changed(root: &Path, site: &Site, idx: &[usize]) {
    for &i in idx {
        std::fs::write(root.join(&site.files[i]), site.body(i)).unwrap();
    }
}

fn copy_release(site: &Site, to: &Path) {
    site.write_all(to);
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` and `--list` probe bench binaries
    }
    let a = args();
    let fake = Fake::start();
    let tmp = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    println!(
        "site: {} files in directories of 100; debounce {} ms; repeats {}",
        a.files,
        DEBOUNCE.as_millis(),
        a.repeat
    );

    // Site A: a plain directory; in-place storms and a rename swap.
    let dir_a = tmp.path().join("a");
    let root = dir_a.join("public");
    std::fs::create_dir_all(&root).unwrap();
    let mut site = Site::new(a.files);
    site.write_all(&root);
    let rules_a = rules(&dir_a, &fake, "public");
    let (d, iw, first_start) = start(&rules_a, &root);
    // Idle: nothing changes.
    let w0 = wakeups(d.pid());
    std::thread::sleep(Duration::from_secs(a.idle));
    let idle_wakeups = (wakeups(d.pid()) - w0) as f64 / a.idle as f64;

    rows.push(run_storm(
        "hugo rewrite, 1% changed",
        &mut site,
        &fake,
        &d,
        &iw,
        a.repeat,
        |s, r| {
            let changed = s.change(0.01, r);
            s.write_all(&root);
            changed
        },
    ));
    rows.push(run_storm(
        "1,000 new files",
        &mut site,
        &fake,
        &d,
        &iw,
        a.repeat,
        |s, r| {
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
        },
    ));
    rows.push(run_storm(
        "rsync-style (temp + rename), 1%",
        &mut site,
        &fake,
        &d,
        &iw,
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
    let trickle_repeat = a.repeat * 4;
    rows.push(run_storm(
        "trickle: single edits",
        &mut site,
        &fake,
        &d,
        &iw,
        trickle_repeat,
        |s, r| {
            let i = (r * 7919 + 13) % s.files.len();
            s.version[i] += 1;
            write_changed(&root, s, &[i]);
            vec![i]
        },
    ));
    rows.push(run_storm(
        "rename swap (mv public.new public), 1%",
        &mut site,
        &fake,
        &d,
        &iw,
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
    let rss_a = status_kb(d.pid(), "VmHWM");
    let irss = status_kb(iw.pid(), "VmHWM");
    drop(iw);
    drop(d);

    // Catch-up: restart on the unchanged tree (warm page cache).
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_purgewatch"));
    cmd.args(["run", "-c"]).arg(&rules_a);
    let t0 = Instant::now();
    let d = Proc::spawn(cmd, true);
    d.wait_line("ready", Duration::from_secs(600));
    let catch_up = t0.elapsed();
    drop(d);

    // Site B: `current -> releases/N`, switched atomically.
    let dir_b = tmp.path().join("b");
    let rel = |n: usize| dir_b.join(format!("releases/{n}"));
    copy_release(&site, &rel(0));
    std::os::unix::fs::symlink(rel(0), dir_b.join("current")).unwrap();
    let rules_b = rules(&dir_b, &fake, "current");
    let (d, iw, _) = start(&rules_b, &dir_b);
    rows.push(run_storm(
        "symlink swap (current -> releases/N), 1%",
        &mut site,
        &fake,
        &d,
        &iw,
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
    let rss_b = status_kb(d.pid(), "VmHWM");
    drop(iw);
    drop(d);

    println!();
    println!(
        "| storm | requests | recall | precision | last write → request − debounce, p50 / p99 | purgewatch CPU s | inotifywait CPU s | CPU ratio | inotifywait events (= curls of a per-event script) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {:.3} | {:.3} | {:.0} ms / {:.0} ms | {:.3} | {:.3} | {:.1}× | {} |",
            r.name,
            r.requests,
            r.recall,
            r.precision,
            percentile(&r.overhead_ms, 0.5),
            percentile(&r.overhead_ms, 0.99),
            r.cpu,
            r.inotify_cpu,
            r.cpu / r.inotify_cpu.max(0.01),
            r.inotify_events
        );
    }
    println!();
    println!("| measure | purgewatch | inotifywait -m -r |");
    println!("|---|---:|---:|");
    println!(
        "| first start (baseline, hashes every file) | {:.2} s | |",
        first_start.as_secs_f64()
    );
    println!(
        "| start-up catch-up of {} unchanged files | {:.2} s | |",
        site.files.len(),
        catch_up.as_secs_f64()
    );
    println!(
        "| peak RSS | {:.1} MB (site A), {:.1} MB (site B) | {:.1} MB |",
        rss_a as f64 / 1024.0,
        rss_b as f64 / 1024.0,
        irss as f64 / 1024.0
    );
    println!("| idle wakeups per second over {} s | {:.2} | |", a.idle, idle_wakeups);
}

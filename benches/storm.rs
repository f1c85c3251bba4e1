//! End-to-end deploy storms: the release binary against the local fake provider, side by side
//! with `inotifywait -m -r` (the floor for the cost of watching) on the same storms.
//!
//! ```text
//! cargo bench --bench storm                      # 20,000 files
//! cargo bench --bench storm -- --files 100000    # 100,000 files
//! cargo bench --bench storm -- --idle 30 --repeat 5
//! cargo bench --bench storm -- --only swap --no-scripts  # some storms; inotifywait only
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
    /// Run only the storms whose name contains this.
    only: Option<String>,
    /// Leave out watchexec and lsyncd (purgewatch and inotifywait only).
    no_scripts: bool,
}

fn args() -> Args {
    let mut a = Args {
        files: 20_000,
        idle: 30,
        repeat: 5,
        only: None,
        no_scripts: false,
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
    others: Vec<OtherRow>,
}

/// One storm as a tool users script instead saw it.
struct OtherRow {
    tool: &'static str,
    cpu: f64,
    /// inotifywait: lines printed; the others: purge requests their curls sent.
    events: f64,
    /// Storms after which the tool sent a purge covering the last write.
    covered: usize,
    recall: f64,
    precision: f64,
    /// Last write → the request that covers it (storms it covered). Not minus the debounce: these
    /// tools batch in windows that start at the first event, so they may fire sooner.
    overhead_ms: Vec<f64>,
}

/// `a / b`, or a dash when `b` is below the clock tick's resolution.
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

/// A tool users script instead of purgewatch, watching the same tree during the same storms.
struct Other {
    tool: &'static str,
    proc: Proc,
    /// Where its curls go (`None` for inotifywait, whose printed events are counted instead).
    fake: Option<Fake>,
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

/// inotifywait always; watchexec and lsyncd driving curl where installed.
fn start_others(watch_root: &Path, dir: &Path, scripts: bool) -> Vec<Other> {
    let mut out = Vec::new();
    let mut cmd = Command::new("inotifywait");
    cmd.args(["-m", "-r", "-q", "--format", "%e %w%f"]).arg(watch_root);
    out.push(Other {
        tool: "inotifywait -m -r",
        proc: Proc::spawn(cmd, false),
        fake: None,
    });
    if scripts && installed("watchexec", "--version") {
        let fake = Fake::start();
        let mut cmd = Command::new("watchexec");
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
        out.push(Other {
            tool: "watchexec + curl",
            proc: Proc::spawn(cmd, false),
            fake: Some(fake),
        });
    }
    if scripts && installed("lsyncd", "-version") {
        let fake = Fake::start();
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
        let mut cmd = Command::new("lsyncd");
        cmd.args(["-nodaemon", "-log", "Exec"]).arg(&conf);
        out.push(Other {
            tool: "lsyncd + curl",
            proc: Proc::spawn(cmd, false),
            fake: Some(fake),
        });
    }
    out
}

fn start(rules: &Path, watch_root: &Path, dir: &Path, scripts: bool) -> (Proc, Vec<Other>, Duration) {
    let t0 = Instant::now();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_purgewatch"));
    cmd.args(["run", "-c"]).arg(rules).env("RUST_LOG", "info");
    let d = Proc::spawn(cmd, true);
    d.wait_line("ready", Duration::from_secs(600));
    let startup = t0.elapsed();
    let others = start_others(watch_root, dir, scripts);
    // inotifywait prints nothing when its watches are set, nor do the others.
    std::thread::sleep(Duration::from_secs(5));
    (d, others, startup)
}

/// Waits for a script's purges after a storm: until none came for the debounce + 1.5 s, and at
/// most 10 s past the debounce if none comes at all (it missed the storm).
fn settle_other(fake: &Fake, before: usize, last_write: Instant) -> Vec<Recorded> {
    let (mut last_n, mut quiet_since) = (before, Instant::now());
    loop {
        let n = fake.vims_purges().len();
        if n != last_n {
            last_n = n;
            quiet_since = Instant::now();
        }
        let quiet = quiet_since.elapsed() > DEBOUNCE + Duration::from_millis(1500);
        if quiet && (n > before || last_write.elapsed() > DEBOUNCE + Duration::from_secs(10)) {
            return fake.vims_purges()[before..].to_vec();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What every storm on one site runs against.
struct Bench<'a> {
    only: &'a Option<String>,
    fake: &'a Fake,
    d: &'a Proc,
    others: &'a [Other],
}

fn run_storm(
    b: &Bench,
    name: &str,
    site: &mut Site,
    repeat: usize,
    mut storm: impl FnMut(&mut Site, usize) -> Vec<usize>,
) -> Option<Row> {
    let (only, fake, d, others) = (b.only, b.fake, b.d, b.others);
    if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
        return None;
    }
    let cpu0 = cpu_secs(d.pid(), false);
    let mut rows: Vec<OtherRow> = others
        .iter()
        .map(|o| OtherRow {
            tool: o.tool,
            cpu: -cpu_secs(o.proc.pid(), true),
            events: if o.fake.is_none() {
                -(o.proc.count.load(Ordering::Relaxed) as f64)
            } else {
                0.0
            },
            covered: 0,
            recall: 0.0,
            precision: 0.0,
            overhead_ms: Vec::new(),
        })
        .collect();
    let mut overhead = Vec::new();
    let (mut requests, mut recall, mut precision) = (0, 0.0, 0.0);
    for r in 0..repeat {
        let before = purges(fake).len();
        let before_others: Vec<usize> = others
            .iter()
            .map(|o| o.fake.as_ref().map_or(0, |f| f.vims_purges().len()))
            .collect();
        let changed = storm(site, r);
        let last_write = Instant::now();
        let reqs = settle(fake, before);
        let first = reqs.iter().map(|q| q.at).min().unwrap();
        overhead.push((first.saturating_duration_since(last_write).as_secs_f64() - DEBOUNCE.as_secs_f64()) * 1000.0);
        requests += reqs.len();
        let (rc, pr) = score(site, &changed, &reqs);
        recall += rc;
        precision += pr;
        for ((o, row), before) in others.iter().zip(&mut rows).zip(before_others) {
            let Some(f) = &o.fake else { continue };
            let reqs = settle_other(f, before, last_write);
            row.events += reqs.len() as f64;
            // Only a request after the last write covers it; earlier ones left it stale.
            if let Some(last) = reqs.iter().map(|q| q.at).max().filter(|at| *at >= last_write) {
                row.covered += 1;
                row.overhead_ms
                    .push(last.duration_since(last_write).as_secs_f64() * 1000.0);
                let (rc, pr) = score(site, &changed, &reqs);
                row.recall += rc;
                row.precision += pr;
            }
        }
    }
    let n = repeat as f64;
    for (o, row) in others.iter().zip(&mut rows) {
        row.cpu = (row.cpu + cpu_secs(o.proc.pid(), true)) / n;
        if o.fake.is_none() {
            row.events += o.proc.count.load(Ordering::Relaxed) as f64;
            row.covered = repeat;
        }
        row.events /= n;
        row.recall /= n;
        row.precision /= row.covered.max(1) as f64;
    }
    Some(Row {
        name: name.into(),
        requests: (requests as f64 / n).round() as usize,
        recall: recall / n,
        precision: precision / n,
        overhead_ms: overhead,
        cpu: (cpu_secs(d.pid(), false) - cpu0) / n,
        others: rows,
    })
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
    let (d, others, first_start) = start(&rules_a, &root, &dir_a, !a.no_scripts);
    let bench = Bench {
        only: &a.only,
        fake: &fake,
        d: &d,
        others: &others,
    };
    // Idle: nothing changes.
    let w0 = wakeups(d.pid());
    std::thread::sleep(Duration::from_secs(a.idle));
    let idle_wakeups = (wakeups(d.pid()) - w0) as f64 / a.idle as f64;

    rows.extend(run_storm(
        &bench,
        "hugo rewrite, 1% changed",
        &mut site,
        a.repeat,
        |s, r| {
            let changed = s.change(0.01, r);
            s.write_all(&root);
            changed
        },
    ));
    rows.extend(run_storm(&bench, "1,000 new files", &mut site, a.repeat, |s, r| {
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
    rows.extend(run_storm(
        &bench,
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
    let trickle_repeat = a.repeat * 4;
    rows.extend(run_storm(
        &bench,
        "trickle: single edits",
        &mut site,
        trickle_repeat,
        |s, r| {
            let i = (r * 7919 + 13) % s.files.len();
            s.version[i] += 1;
            write_changed(&root, s, &[i]);
            vec![i]
        },
    ));
    rows.extend(run_storm(
        &bench,
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
    let rss_a = status_kb(d.pid(), "VmHWM");
    let other_rss: Vec<(&str, u64)> = others
        .iter()
        .map(|o| (o.tool, status_kb(o.proc.pid(), "VmHWM")))
        .collect();
    drop(others);
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
    let (d, others, _) = start(&rules_b, &dir_b, &dir_b, !a.no_scripts);
    let bench = Bench {
        only: &a.only,
        fake: &fake,
        d: &d,
        others: &others,
    };
    rows.extend(run_storm(
        &bench,
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
    let rss_b = status_kb(d.pid(), "VmHWM");
    drop(others);
    drop(d);

    println!();
    println!(
        "| storm | requests | recall | precision | last write → request − debounce, p50 / p99 | purgewatch CPU s | inotifywait CPU s | CPU ratio | inotifywait events (= curls of a per-event script) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let iw = &r.others[0];
        println!(
            "| {} | {} | {:.3} | {:.3} | {:.0} ms / {:.0} ms | {:.3} | {:.3} | {} | {:.0} |",
            r.name,
            r.requests,
            r.recall,
            r.precision,
            percentile(&r.overhead_ms, 0.5),
            percentile(&r.overhead_ms, 0.99),
            r.cpu,
            iw.cpu,
            ratio(r.cpu, iw.cpu),
            iw.events
        );
    }
    if rows.iter().any(|r| r.others.len() > 1) {
        // One table: each storm as purgewatch and every tool users script instead saw it.
        println!();
        println!(
            "| storm | tool | purge requests | storms covered | recall | precision | last write → covering request, p50 / p99 (debounce 1 s) | CPU s | purgewatch CPU ÷ tool CPU |"
        );
        println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
        let ms = |v: &[f64]| {
            if v.is_empty() {
                "never".to_string()
            } else {
                format!("{:.0} ms / {:.0} ms", percentile(v, 0.5), percentile(v, 0.99))
            }
        };
        for r in &rows {
            let n = r.overhead_ms.len();
            let total: Vec<f64> = r
                .overhead_ms
                .iter()
                .map(|o| o + DEBOUNCE.as_secs_f64() * 1000.0)
                .collect();
            println!(
                "| {} | **purgewatch** | {} | {n}/{n} | {:.3} | {:.3} | {} | {:.3} | 1.0× |",
                r.name,
                r.requests,
                r.recall,
                r.precision,
                ms(&total),
                r.cpu
            );
            for o in &r.others {
                let (requests, covered, recall, precision, latency) = if o.tool.starts_with("inotifywait") {
                    // It only prints events; a per-event script sends one full purge for each.
                    let dash = || "–".to_string();
                    (format!("{:.0}", o.events), dash(), dash(), dash(), dash())
                } else {
                    (
                        format!("{:.1}", o.events),
                        format!("{}/{n}", o.covered),
                        format!("{:.3}", o.recall),
                        format!("{:.3}", o.precision),
                        ms(&o.overhead_ms),
                    )
                };
                println!(
                    "| {} | {} | {requests} | {covered} | {recall} | {precision} | {latency} | {:.3} | {} |",
                    r.name,
                    o.tool,
                    o.cpu,
                    ratio(r.cpu, o.cpu)
                );
            }
        }
    }
    println!();
    println!("| measure | purgewatch | the script's watcher |");
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
        "| peak RSS | {:.1} MB (site A), {:.1} MB (site B) | |",
        rss_a as f64 / 1024.0,
        rss_b as f64 / 1024.0,
    );
    for (tool, kb) in other_rss {
        println!("| peak RSS of {tool} (site A) | | {:.1} MB |", kb as f64 / 1024.0);
    }
    println!("| idle wakeups per second over {} s | {:.2} | |", a.idle, idle_wakeups);
}

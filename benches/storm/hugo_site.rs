//! Real-site storms: a Hugo site (sections, tags, pagination, RSS feeds, a sitemap) built by the
//! real `hugo`, deployed four ways while purgewatch watches `public/`: `hugo` in place,
//! `hugo --cleanDestinationDir`, a rename swap, and `rsync -a --delete` of a fresh build. Per
//! deploy: the files that differ (hashed before and after), requests, recall and precision of
//! the purged URLs, the time from the deploy's end to the first purge (minus the debounce), and
//! whether `purgewatch plan` is empty afterwards. Run when `hugo` is on PATH
//! (`apt-get install hugo`); rsync's deploy needs `rsync`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::fake::{Fake, Recorded};

use crate::hugo_gen::{hugo, page_path, snapshot, urls, write_page, write_sources};

/// One deploy's figures.
pub struct Deploy {
    pub kind: &'static str,
    pub differ: usize,
    pub requests: usize,
    pub recall: f64,
    pub precision: f64,
    pub overhead_ms: f64,
    pub plan_empty: bool,
}

fn score(
    before: &BTreeMap<String, [u8; 32]>,
    after: &BTreeMap<String, [u8; 32]>,
    reqs: &[Recorded],
) -> (usize, f64, f64) {
    let all: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let changed: BTreeSet<&String> = all
        .iter()
        .copied()
        .filter(|p| before.get(*p) != after.get(*p))
        .collect();
    let pats: Vec<String> = reqs
        .iter()
        .filter(|r| r.path.contains("/services/cdn/"))
        .map(|r| r.pattern())
        .collect();
    let res: Vec<Option<regex::Regex>> = pats
        .iter()
        .map(|p| (p != "*").then(|| regex::Regex::new(p).unwrap()))
        .collect();
    let (mut want, mut hit, mut hit_changed) = (0usize, 0usize, 0usize);
    for p in &all {
        let c = changed.contains(p);
        for u in urls(p) {
            let m = res.iter().any(|r| r.as_ref().is_none_or(|r| r.is_match(&u)));
            want += c as usize;
            hit += m as usize;
            hit_changed += (m && c) as usize;
        }
    }
    (
        changed.len(),
        hit_changed as f64 / want.max(1) as f64,
        if hit == 0 { 1.0 } else { hit_changed as f64 / hit as f64 },
    )
}

fn plan_is_empty(bin: &Path, rules: &Path) -> bool {
    let out = Command::new(bin).args(["plan", "-c"]).arg(rules).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success()
        && text
            .lines()
            .filter(|l| l.starts_with("target "))
            .all(|l| l.contains(": 0 files, 0 requests"))
}

/// Runs the four deploys on a `pages`-page site; `None` (with the reason printed) when hugo is
/// missing.
pub fn run(bin: &Path, tmp: &Path, pages: usize) -> Option<Vec<Deploy>> {
    if Command::new("hugo")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        println!("hugo storms: skipped (hugo is not on PATH: apt-get install hugo)");
        return None;
    }
    let dir = tmp.join(format!("hugo-{pages}"));
    let _ = std::fs::remove_dir_all(&dir);
    let src = dir.join("src");
    let public = dir.join("public");
    write_sources(&src, pages);
    let t = Instant::now();
    hugo(&src, &public, false);
    println!(
        "hugo site: {pages} pages, {} files in public/ (built in {:.1}s)",
        snapshot(&public).len(),
        t.elapsed().as_secs_f64()
    );
    let fake = Fake::start();
    // The same rules as the synthetic storms (debounce 1 s, both targets, dotfiles excluded).
    let rules = crate::rules(&dir, &fake, "public");
    let mut daemon = Command::new(bin)
        .args(["run", "-c"])
        .arg(&rules)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Ready: the baseline is in the state file once `plan` can read it.
    let end = Instant::now() + Duration::from_secs(120);
    while !plan_is_empty(bin, &rules) {
        assert!(Instant::now() < end, "purgewatch did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut out = Vec::new();
    let mut next_page = pages;
    let have_rsync = Command::new("rsync")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok();
    let kinds: Vec<&'static str> = vec![
        "edit one post, in place",
        "add a post, in place",
        "delete a post, --cleanDestinationDir",
        "edit, rename swap",
        "edit, rsync -a --delete",
    ];
    for (k, kind) in kinds.into_iter().enumerate() {
        let before = snapshot(&public);
        let n = crate::purges(&fake).len();
        let last_write = match k {
            0 => {
                write_page(&src, 17, 1);
                hugo(&src, &public, false);
                Instant::now()
            }
            1 => {
                write_page(&src, next_page, 0);
                next_page += 1;
                hugo(&src, &public, false);
                Instant::now()
            }
            2 => {
                std::fs::remove_file(src.join(page_path(23))).unwrap();
                hugo(&src, &public, true);
                Instant::now()
            }
            3 => {
                write_page(&src, 42, 2);
                let next = dir.join("public.new");
                let _ = std::fs::remove_dir_all(&next);
                hugo(&src, &next, false);
                let old = dir.join("public.old");
                let _ = std::fs::remove_dir_all(&old);
                std::fs::rename(&public, &old).unwrap();
                std::fs::rename(&next, &public).unwrap();
                Instant::now()
            }
            _ => {
                if !have_rsync {
                    println!("hugo storm \"{kind}\": skipped (rsync is not installed)");
                    continue;
                }
                write_page(&src, 99, 3);
                let build = dir.join("build");
                let _ = std::fs::remove_dir_all(&build);
                hugo(&src, &build, false);
                let st = Command::new("rsync")
                    .arg("-a")
                    .arg("--delete")
                    .arg(format!("{}/", build.display()))
                    .arg(format!("{}/", public.display()))
                    .status()
                    .unwrap();
                assert!(st.success(), "rsync failed");
                Instant::now()
            }
        };
        let after = snapshot(&public);
        let reqs = crate::settle(&fake, n, last_write, true);
        let (differ, recall, precision) = score(&before, &after, &reqs);
        let first = reqs.first().map(|r| r.at).unwrap_or(last_write);
        let overhead_ms =
            (first.saturating_duration_since(last_write).as_secs_f64() - crate::DEBOUNCE.as_secs_f64()) * 1000.0;
        // Idle again: the record equals the disk.
        std::thread::sleep(Duration::from_millis(700));
        let plan_empty = plan_is_empty(bin, &rules);
        out.push(Deploy {
            kind,
            differ,
            requests: reqs.len(),
            recall,
            precision,
            overhead_ms,
            plan_empty,
        });
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    let _: PathBuf = dir;
    Some(out)
}

/// Prints one table of the deploys.
pub fn report(pages: usize, deploys: &[Deploy]) {
    println!("\nHugo site, {pages} pages (purgewatch; requests count both targets):");
    println!("| deploy | files that differ | requests | recall | precision | overhead ms | plan empty after |");
    println!("|---|---:|---:|---:|---:|---:|---|");
    for d in deploys {
        println!(
            "| {} | {} | {} | {:.3} | {:.3} | {:.0} | {} |",
            d.kind,
            d.differ,
            d.requests,
            d.recall,
            d.precision,
            d.overhead_ms,
            if d.plan_empty { "yes" } else { "NO" }
        );
    }
}

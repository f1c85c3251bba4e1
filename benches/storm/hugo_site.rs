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

const SECTIONS: &[&str] = &["posts", "docs", "blog"];
const TAGS: usize = 30;

/// Writes the Hugo site's sources: config, layouts, and `pages` content files.
fn write_sources(src: &Path, pages: usize) {
    let w = |rel: &str, text: &str| {
        let p = src.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    w(
        "config.toml",
        "baseURL = \"/\"\ntitle = \"Storm\"\ndisableKinds = []\npaginate = 10\n[taxonomies]\ntag = \"tags\"\n",
    );
    w(
        "layouts/_default/baseof.html",
        "<!doctype html><html><head><title>{{ .Title }}</title></head><body>{{ block \"main\" . }}{{ end }}</body></html>\n",
    );
    w(
        "layouts/_default/single.html",
        "{{ define \"main\" }}<h1>{{ .Title }}</h1>{{ .Content }}<p>{{ range .Params.tags }}<a href=\"/tags/{{ . | urlize }}/\">{{ . }}</a> {{ end }}</p>{{ end }}\n",
    );
    w(
        "layouts/_default/list.html",
        "{{ define \"main\" }}<h1>{{ .Title }}</h1><ul>{{ range .Paginator.Pages }}<li><a href=\"{{ .RelPermalink }}\">{{ .Title }}</a></li>{{ end }}</ul>{{ end }}\n",
    );
    w(
        "layouts/index.html",
        "{{ define \"main\" }}<h1>Home</h1><ul>{{ range first 20 .Site.RegularPages }}<li><a href=\"{{ .RelPermalink }}\">{{ .Title }}</a></li>{{ end }}</ul>{{ end }}\n",
    );
    for i in 0..pages {
        write_page(src, i, 0);
    }
}

fn page_path(i: usize) -> String {
    format!("content/{}/page-{i:05}.md", SECTIONS[i % SECTIONS.len()])
}

/// Content page `i`, in its `version`. Dates spread over years so lists and feeds have an order.
fn write_page(src: &Path, i: usize, version: u32) {
    let day = 1 + (i % 28);
    let month = 1 + (i / 28) % 12;
    let year = 2015 + (i / 336) % 10;
    let tags: Vec<String> = (0..3).map(|k| format!("\"tag{}\"", (i * 7 + k * 11) % TAGS)).collect();
    let body = format!(
        "+++\ntitle = \"Page {i}\"\ndate = {year}-{month:02}-{day:02}T10:00:00Z\ntags = [{}]\n+++\n\nPage {i}, version {version}. {}\n",
        tags.join(", "),
        "Lorem ipsum dolor sit amet. ".repeat(20)
    );
    let p = src.join(page_path(i));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, body).unwrap();
}

fn hugo(src: &Path, dest: &Path, clean: bool) {
    let mut cmd = Command::new("hugo");
    cmd.arg("-s").arg(src).arg("-d").arg(dest).arg("--quiet");
    if clean {
        cmd.arg("--cleanDestinationDir");
    }
    let out = cmd.stdout(Stdio::null()).output().expect("run hugo");
    assert!(
        out.status.success(),
        "hugo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every file under `root` with its BLAKE3.
fn snapshot(root: &Path) -> BTreeMap<String, [u8; 32]> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(p);
            } else if t.is_file() {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, *blake3::hash(&std::fs::read(&p).unwrap()).as_bytes());
            }
        }
    }
    out
}

/// A file's URLs: its own, and for an index.html its directory's with and without the slash.
fn urls(rel: &str) -> Vec<String> {
    let mut out = vec![format!("/{rel}")];
    if rel == "index.html" {
        out.push("/".into());
    } else if let Some(dir) = rel.strip_suffix("/index.html") {
        out.push(format!("/{dir}/"));
        out.push(format!("/{dir}"));
    }
    out
}

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

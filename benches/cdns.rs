//! purgewatch against the four CDNs' APIs (the tests' fakes, which keep each provider's
//! documented shapes and limits, and CloudFront's signature check) on a 100,000-page site, for
//! three deploys: a rebuild that rewrites every page with 1% new bytes spread over the site (a
//! Hugo build after a template tweak that touched one page in each section), one post edited (3
//! pages: the post, its section's list, the home page) and a section rebuilt (its 100 pages).
//! Beside it, what the tools people use do with the same deploys, computed by their own rules:
//! `hugo deploy --invalidateCDN` (one CloudFront invalidation of `/*` per deploy),
//! `s3deploy` (its changed files reduced to at most 8 CloudFront paths by widening directories,
//! else `/*`: lib/cloudfront.go `normalizeInvalidationPaths`), and a purge-everything script
//! (Cloudflare `purge_everything`, Fastly `purge_all`, Bunny `purgeCache`).
//!
//! For each: requests, what they name (URLs, prefixes, paths), the CloudFront paths billed (each
//! past the month's 1,000 free ones costs $0.005), and how many of the site's pages the purge
//! covers — the changed ones (recall) and the others (the collateral: the pages the CDN must
//! fetch from the origin again).
//!
//! `cargo bench --bench cdns [-- --files N]`

#![allow(dead_code)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "storm/hugo_gen.rs"]
mod hugo_gen;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::cloudfront;
use common::fake::{BUNNY_KEY, CF_TOKEN, FASTLY_TOKEN, Fake, Route};

const HOST: &str = "www.example.com";

fn page(i: usize) -> String {
    if i.is_multiple_of(100) {
        format!("d{:04}/index.html", i / 100)
    } else {
        format!("d{:04}/p{:02}.html", i / 100, i % 100)
    }
}

/// The URL paths a page is served at (an index page also at its directory, with and without
/// the slash).
fn urls_of(rel: &str) -> Vec<String> {
    match rel.strip_suffix("index.html") {
        Some(dir) => vec![
            format!("/{rel}"),
            format!("/{dir}"),
            format!("/{}", dir.trim_end_matches('/')),
        ],
        None => vec![format!("/{rel}")],
    }
}

fn body(i: usize, v: u32) -> String {
    format!(
        "<html><body><h1>page {i} v{v}</h1>{}</body></html>\n",
        "lorem ipsum ".repeat(45)
    )
}

struct Deploy {
    name: &'static str,
    /// Pages whose bytes change.
    changed: Vec<usize>,
    /// Every page rewritten (a rebuild), or only the changed ones.
    rewrite_all: bool,
}

fn deploys(files: usize) -> Vec<Deploy> {
    vec![
        Deploy {
            name: "rebuild, 1% changed (one page in each section)",
            changed: (0..files).filter(|i| i % 100 == 7).collect(),
            rewrite_all: true,
        },
        Deploy {
            name: "one post edited (the post and two index pages)",
            changed: vec![1234, 1200, 0],
            rewrite_all: false,
        },
        Deploy {
            name: "a section rebuilt (its 100 pages)",
            changed: {
                let start = files / 200 * 100;
                (start..start + 100).collect()
            },
            rewrite_all: false,
        },
    ]
}

/// A site as the counting sees it: its files, the changed ones, and the URLs a file is served at.
struct Site {
    files: Vec<String>,
    changed: BTreeSet<String>,
    urls: fn(&str) -> Vec<String>,
}

/// What a purge covers, as patterns on URL paths: exact paths and prefixes (`/d0001/*`).
#[derive(Default)]
struct Cover {
    exact: BTreeSet<String>,
    prefixes: Vec<String>,
    everything: bool,
}

impl Cover {
    fn add(&mut self, path: &str) {
        match path.strip_suffix('*') {
            Some(p) if p == "/" || p.is_empty() => self.everything = true,
            Some(p) => self.prefixes.push(p.to_string()),
            None => {
                self.exact.insert(path.to_string());
            }
        }
    }

    fn covers(&self, urls: &[String]) -> bool {
        self.everything
            || urls
                .iter()
                .any(|u| self.exact.contains(u) || self.prefixes.iter().any(|p| u.starts_with(p.as_str())))
    }

    /// (changed files covered, other files covered), each file by the URLs it is served at.
    fn count(&self, site: &Site) -> (usize, usize) {
        let mut hit = 0;
        let mut collateral = 0;
        for rel in &site.files {
            if self.covers(&(site.urls)(rel)) {
                if site.changed.contains(rel) {
                    hit += 1;
                } else {
                    collateral += 1;
                }
            }
        }
        (hit, collateral)
    }
}

/// A URL path from an absolute URL (`https://www.example.com/a` → `/a`).
fn path_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    match rest.find('/') {
        Some(i) => rest[i..].to_string(),
        None => "/".to_string(),
    }
}

/// s3deploy's `normalizeInvalidationPaths` (lib/cloudfront.go), root `/`, threshold 8: index
/// pages as their directory, then directories widened level by level until at most 8 paths
/// remain, else `/*`.
fn s3deploy_paths(changed: &[String]) -> Vec<String> {
    let threshold = 8;
    let mut maxlevels = 0;
    let mut normalized: Vec<String> = Vec::new();
    for p in changed {
        let p = format!("/{}", p.trim_start_matches('/'));
        maxlevels = maxlevels.max(p.matches('/').count());
        match p.strip_suffix("index.html") {
            Some(dir) => normalized.push(dir.to_string()),
            None => normalized.push(p),
        }
    }
    let unique = |v: Vec<String>| -> Vec<String> {
        let mut seen = BTreeSet::new();
        v.into_iter().filter(|x| seen.insert(x.clone())).collect()
    };
    normalized = unique(normalized);
    normalized.sort();
    if normalized.len() > threshold {
        for k in (1..=maxlevels).rev() {
            for p in normalized.iter_mut() {
                if p.matches('/').count() > k {
                    // Go's path.Dir: all but the last element ("/d/" → "/d", "/d/p.html" → "/d").
                    let dir = match p.rfind('/') {
                        Some(0) | None => "/".to_string(),
                        Some(i) => p[..i].to_string(),
                    };
                    let mut parts: Vec<&str> = dir.trim_start_matches('/').split('/').collect();
                    if parts.len() > 1 {
                        parts.pop();
                    }
                    *p = format!("/{}/*", parts.join("/"));
                }
            }
            normalized = unique(std::mem::take(&mut normalized));
            if normalized.len() <= threshold {
                break;
            }
        }
        if normalized.len() > threshold {
            return vec!["/*".into()];
        }
    }
    if normalized.iter().any(|p| p == "/*") {
        return vec!["/*".into()];
    }
    normalized
}

struct Row {
    who: String,
    requests: usize,
    names: String,
    billed: Option<usize>,
    hit: usize,
    collateral: usize,
}

fn write_all(root: &Path, files: usize, changed: &BTreeSet<usize>, rewrite_all: bool, version: u32) {
    let later = SystemTime::now() + Duration::from_secs(version as u64);
    for i in 0..files {
        let is_changed = changed.contains(&i);
        if !rewrite_all && !is_changed {
            continue;
        }
        let p = root.join(page(i));
        let v = if is_changed { version } else { 1 };
        let text = body(i, v);
        let tmp = p.with_extension("tmp~");
        std::fs::write(&tmp, text).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&tmp)
            .unwrap()
            .set_modified(later)
            .unwrap();
        std::fs::rename(&tmp, &p).unwrap();
    }
}

/// How many requests each fake had received.
struct Counts([usize; 6]);

impl Counts {
    fn now(fake: &Fake, cf: &cloudfront::CloudFront) -> Counts {
        let n = |route| fake.requests_to(route).len();
        Counts([
            n(Route::CfPurge),
            n(Route::FastlyPurge),
            n(Route::FastlyAll),
            n(Route::BunnyPurge),
            n(Route::BunnyAll),
            cf.paths().len(),
        ])
    }
}

/// Waits until the deploy written at `wrote` has been purged (no new request for 3 s), reads
/// what each CDN received since `counts0`, scores it on `site`, and prints the table with the
/// other tools' figures beside it.
fn measure(fake: &Fake, cf: &cloudfront::CloudFront, counts0: &Counts, wrote: Instant, site: &Site, title: &str) {
    let counts0 = &counts0.0;
    let total = || {
        fake.requests_to(Route::CfPurge).len()
            + fake.requests_to(Route::FastlyPurge).len()
            + fake.requests_to(Route::BunnyPurge).len()
            + fake.requests_to(Route::FastlyAll).len()
            + fake.requests_to(Route::BunnyAll).len()
            + cf.paths().len()
    };
    let mut last = total();
    let mut still = Instant::now();
    let mut settled_at = Instant::now();
    while still.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(100));
        let now = total();
        if now != last {
            last = now;
            still = Instant::now();
            settled_at = Instant::now();
        }
    }
    let last_request = settled_at.saturating_duration_since(wrote);
    let since = |route, i: usize| fake.requests_to(route).split_off(counts0[i]);
    let (files, changed) = (site.files.len(), site.changed.len());
    let mut rows = Vec::new();
    // Cloudflare.
    let mut cover = Cover::default();
    let calls = since(Route::CfPurge, 0);
    let (mut nf, mut np) = (0, 0);
    for c in &calls {
        let v = c.json();
        if v["purge_everything"] == true {
            cover.everything = true;
        }
        for f in v["files"].as_array().into_iter().flatten() {
            nf += 1;
            cover.add(&path_of(f.as_str().unwrap_or_default()));
        }
        for p in v["prefixes"].as_array().into_iter().flatten() {
            np += 1;
            let p = p.as_str().unwrap_or_default();
            cover.add(&format!("{}*", path_of(&format!("https://{p}"))));
        }
    }
    let (hit, collateral) = cover.count(site);
    rows.push(Row {
        who: "purgewatch → Cloudflare".into(),
        requests: calls.len(),
        names: format!("{nf} URLs, {np} prefixes"),
        billed: None,
        hit,
        collateral,
    });
    // Fastly.
    let mut cover = Cover::default();
    let (purges, alls) = (since(Route::FastlyPurge, 1), since(Route::FastlyAll, 2));
    if !alls.is_empty() {
        cover.everything = true;
    }
    for r in &purges {
        if let Some(rest) = r.path.strip_prefix("/fastly/purge/") {
            cover.add(&path_of(&format!("https://{rest}")));
        }
    }
    let (hit, collateral) = cover.count(site);
    rows.push(Row {
        who: "purgewatch → Fastly".into(),
        requests: purges.len() + alls.len(),
        names: format!(
            "{} URLs{}",
            purges.len(),
            if alls.is_empty() { "" } else { ", purge_all" }
        ),
        billed: None,
        hit,
        collateral,
    });
    // Bunny.
    let mut cover = Cover::default();
    let (purges, alls) = (since(Route::BunnyPurge, 3), since(Route::BunnyAll, 4));
    if !alls.is_empty() {
        cover.everything = true;
    }
    let mut wildcards = 0;
    for r in &purges {
        for (k, v) in r.query_pairs() {
            if k == "url" {
                wildcards += v.ends_with('*') as usize;
                cover.add(&path_of(&v));
            }
        }
    }
    let (hit, collateral) = cover.count(site);
    rows.push(Row {
        who: "purgewatch → Bunny".into(),
        requests: purges.len() + alls.len(),
        names: format!(
            "{} URLs, {wildcards} wildcards{}",
            purges.len() - wildcards,
            if alls.is_empty() { "" } else { ", purgeCache" }
        ),
        billed: None,
        hit,
        collateral,
    });
    // CloudFront.
    let mut cover = Cover::default();
    let invalidations = &cf.paths()[counts0[5]..];
    let mut paths = 0;
    for inv in invalidations {
        for p in inv {
            paths += 1;
            cover.add(p);
        }
    }
    let (hit, collateral) = cover.count(site);
    rows.push(Row {
        who: "purgewatch → CloudFront".into(),
        requests: invalidations.len(),
        names: format!("{paths} paths"),
        billed: Some(paths),
        hit,
        collateral,
    });
    // The tools people use, by their own rules, on the same changed pages.
    let changed_paths: Vec<String> = site.changed.iter().cloned().collect();
    let cover = Cover {
        everything: true,
        ..Default::default()
    };
    let (hit, collateral) = cover.count(site);
    rows.push(Row {
        who: "hugo deploy --invalidateCDN → CloudFront".into(),
        requests: 1,
        names: "/*".into(),
        billed: Some(1),
        hit,
        collateral,
    });
    let s3 = s3deploy_paths(&changed_paths);
    let mut cover = Cover::default();
    for p in &s3 {
        cover.add(p);
    }
    let (hit, collateral) = cover.count(site);
    rows.push(Row {
        who: "s3deploy → CloudFront".into(),
        requests: 1,
        names: if s3.len() > 3 {
            format!("{} paths ({} …)", s3.len(), s3[..3].join(" "))
        } else {
            s3.join(" ")
        },
        billed: Some(s3.len()),
        hit,
        collateral,
    });
    rows.push(Row {
        who: "purge-everything script → Cloudflare / Fastly / Bunny".into(),
        requests: 1,
        names: "everything".into(),
        billed: None,
        hit: changed,
        collateral: files - changed,
    });
    println!();
    println!(
        "### {title}; last write → last purge request {:.2} s",
        last_request.as_secs_f64()
    );
    println!();
    println!(
        "| who | requests | what they name | CloudFront paths billed (cost past the free 1,000) | changed pages covered | other pages purged |"
    );
    println!("|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} of {} | {} of {} |",
            r.who,
            r.requests,
            r.names,
            r.billed
                .map(|p| format!("{p} (${:.3})", p as f64 * 0.005))
                .unwrap_or_else(|| "—".into()),
            r.hit,
            changed,
            r.collateral,
            files - changed
        );
    }
}

/// A real Hugo site (the storm bench's generator: sections, tags, pagination, feeds, a
/// sitemap) built by `hugo` into a tree a second daemon watches with the same four targets; one
/// post edited and the site rebuilt in place (hugo rewrites what it renders).
fn hugo_storm(fake: &Fake, cf: &cloudfront::CloudFront, tmp: &Path, pages: usize) {
    let src = tmp.join("hugo-src");
    let public = tmp.join("hugo-public");
    hugo_gen::write_sources(&src, pages);
    hugo_gen::hugo(&src, &public, false);
    let rules = std::fs::read_to_string(tmp.join("rules.yaml"))
        .unwrap()
        .replace(&tmp.join("public").display().to_string(), &public.display().to_string())
        .replace(
            &tmp.join("state").display().to_string(),
            &tmp.join("hugo-state").display().to_string(),
        );
    std::fs::write(tmp.join("hugo-rules.yaml"), rules).unwrap();
    let daemon = start(&tmp.join("hugo-rules.yaml"));
    let before = hugo_gen::snapshot(&public);
    let counts0 = Counts::now(fake, cf);
    hugo_gen::write_page(&src, 17, 1);
    hugo_gen::hugo(&src, &public, false);
    let wrote = Instant::now();
    let after = hugo_gen::snapshot(&public);
    let files: Vec<String> = after.keys().cloned().collect();
    let changed: BTreeSet<String> = after
        .iter()
        .filter(|(p, h)| before.get(*p) != Some(*h))
        .map(|(p, _)| p.clone())
        .chain(before.keys().filter(|p| !after.contains_key(*p)).cloned())
        .collect();
    let site = Site {
        files,
        changed,
        urls: hugo_gen::urls,
    };
    let title = format!(
        "real Hugo site ({pages} posts, {} files): one post edited, `hugo` rebuilds in place — {} files differ",
        site.files.len(),
        site.changed.len()
    );
    measure(fake, cf, &counts0, wrote, &site, &title);
    drop(daemon);
}

/// Starts `purgewatch run -c rules` (the tests' `Daemon`: stopped when dropped) and waits
/// for `ready`.
fn start(rules: &Path) -> common::Daemon {
    let mut cmd = Command::new(common::bin());
    cmd.args(["run", "-c"])
        .arg(rules)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let d = common::Daemon::spawn(cmd);
    d.wait_ready();
    d
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let argv: Vec<String> = std::env::args().collect();
    // A real Hugo site too, when hugo is installed (`--hugo PAGES`, default 3,000 posts).
    let hugo_pages = Command::new("hugo")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
        .then(|| {
            argv.iter()
                .position(|a| a == "--hugo")
                .and_then(|i| argv.get(i + 1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(3000)
        });
    let files: usize = argv
        .iter()
        .position(|a| a == "--files")
        .and_then(|i| argv.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("public");
    for i in 0..files {
        let p = root.join(page(i));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body(i, 1)).unwrap();
    }
    let fake = Fake::start();
    let cf = cloudfront::CloudFront::start();
    let a = fake.addr;
    let rules = format!(
        "state_dir: {state}\ndefaults:\n  debounce: 1s\n  rate_limit: 200\ntargets:\n  cloudflare:\n    type: cloudflare\n    zone_id: 023e105f4ecef8ad9ca31a8372d0c353\n    api_token: {CF_TOKEN}\n    api_url: http://{a}/cf\n    max_urls: 30\n  fastly:\n    type: fastly\n    service_id: SU1Z0isxPaozGVKXdv0eY\n    api_token: {FASTLY_TOKEN}\n    api_url: http://{a}/fastly\n  bunny:\n    type: bunny\n    pull_zone_id: 12345\n    api_key: {BUNNY_KEY}\n    api_url: http://{a}/bunny\n  cloudfront:\n    type: cloudfront\n    distribution_id: {dist}\n    access_key_id: {ak}\n    secret_access_key: {sk}\n    api_url: {cfu}\nrules:\n  - name: site\n    watch: {root}\n    base_url: https://{HOST}\n    targets: [cloudflare, fastly, bunny, cloudfront]\n",
        state = tmp.path().join("state").display(),
        dist = cloudfront::DISTRIBUTION,
        ak = cloudfront::ACCESS_KEY,
        sk = cloudfront::SECRET_KEY,
        cfu = cf.url(),
        root = root.display(),
    );
    std::fs::write(tmp.path().join("rules.yaml"), rules).unwrap();
    let daemon = start(&tmp.path().join("rules.yaml"));
    println!(
        "site: {files} pages in sections of 100 (each with an index.html); purgewatch: debounce 1 s, rate_limit 200/s, Cloudflare max_urls 30, CloudFront max_paths 100"
    );
    let site_files: Vec<String> = (0..files).map(page).collect();
    for (n, d) in deploys(files).into_iter().enumerate() {
        let changed: BTreeSet<usize> = d.changed.iter().copied().collect();
        let counts0 = Counts::now(&fake, &cf);
        write_all(&root, files, &changed, d.rewrite_all, n as u32 + 2);
        let wrote = Instant::now();
        let title = format!(
            "{} — {} pages changed{}",
            d.name,
            changed.len(),
            if d.rewrite_all { ", every page rewritten" } else { "" }
        );
        let site = Site {
            files: site_files.clone(),
            changed: changed.iter().map(|&i| page(i)).collect(),
            urls: urls_of,
        };
        measure(&fake, &cf, &counts0, wrote, &site, &title);
    }
    if let Some(pages) = hugo_pages {
        hugo_storm(&fake, &cf, tmp.path(), pages);
    }
    drop(daemon);
}

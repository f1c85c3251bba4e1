//! Purge only what really changed: a Hugo-style rewrite of a 5,000-file site with 20 real changes,
//! identical rewrites and `touch -r` that send nothing, `plan` and `--dry-run` explanations.

mod common;

use common::*;
use std::collections::BTreeSet;

/// 50 sections × 100 pages, each section with an index.html: 5,000 files.
fn build_site(site: &Site) -> Vec<String> {
    let mut files = Vec::new();
    for s in 0..50 {
        for p in 0..100 {
            let rel = if p == 0 {
                format!("s{s:02}/index.html")
            } else {
                format!("s{s:02}/page-{p:03}.html")
            };
            site.write(&rel, &format!("<h1>{rel}</h1>"));
            files.push(rel);
        }
    }
    files
}

fn urls(rel: &str) -> Vec<String> {
    let mut out = vec![format!("/{rel}")];
    if let Some(dir) = rel.strip_suffix("/index.html") {
        out.push(format!("/{dir}/"));
        out.push(format!("/{dir}"));
    }
    out
}

#[test]
fn hugo_rewrite_of_5000_files_purges_exactly_the_20_that_changed() {
    let fake = Fake::start();
    let site = Site::new();
    let files = build_site(&site);
    site.write_rules(&site.rules_for(&fake, "1s", ""));
    let d = site.start(&["run"]);
    d.wait_ready();

    // Rewrite every file, as a generator does; 20 of them (two section indexes among them) get new bytes.
    let changed: BTreeSet<String> = (0..18)
        .map(|i| files[(i * 249 + 7) % files.len()].clone())
        .chain(["s03/index.html".to_string(), "s41/index.html".to_string()])
        .collect();
    assert_eq!(changed.len(), 20);
    for f in &files {
        let body = if changed.contains(f) {
            format!("<h1>{f}</h1><p>new</p>")
        } else {
            format!("<h1>{f}</h1>")
        };
        site.write(f, &body);
    }
    let vims = wait_requests(&fake, Route::VimsPurge, 1, &d);
    wait_requests(&fake, Route::SiteHostPurge, 1, &d);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let vims_calls = fake.vims_purges();
    assert!(vims_calls.len() <= 2, "{} VIMS calls", vims_calls.len());
    assert_eq!(fake.sitehost_purges().len(), 1);
    let patterns: Vec<regex::Regex> = vims_calls
        .iter()
        .map(|r| regex::Regex::new(&r.pattern()).unwrap())
        .collect();
    let hit = |u: &str| patterns.iter().any(|p| p.is_match(u));
    let mut purged = 0;
    let mut purged_changed = 0;
    let mut expected = 0;
    let mut found = 0;
    for f in &files {
        for u in urls(f) {
            let is_changed = changed.contains(f);
            expected += is_changed as usize;
            if hit(&u) {
                purged += 1;
                purged_changed += is_changed as usize;
                found += is_changed as usize;
            }
            if is_changed {
                assert!(hit(&format!("https://example.com{u}?v=1")), "{u} in the full-URL form");
            }
        }
    }
    let precision = purged_changed as f64 / purged as f64;
    let recall = found as f64 / expected as f64;
    eprintln!(
        "precision {precision:.3} ({purged_changed}/{purged}), recall {recall:.3} ({found}/{expected}), pattern bytes {}",
        vims[0].pattern().len()
    );
    assert_eq!(recall, 1.0);
    assert_eq!(precision, 1.0);
    assert_plan_empty(&site);
}

#[test]
fn identical_rewrites_and_touch_r_send_nothing() {
    let fake = Fake::start();
    let site = Site::new();
    let files = build_site(&site);
    site.write_rules(&site.rules_for(&fake, "500ms", ""));
    let d = site.start(&["run"]);
    d.wait_ready();
    for f in &files {
        site.write(f, &format!("<h1>{f}</h1>"));
    }
    // touch -r: the mtime is set back to a reference file's.
    let status = std::process::Command::new("touch")
        .arg("-r")
        .arg(site.root.join("s00/page-001.html"))
        .arg(site.root.join("s01/page-001.html"))
        .status()
        .unwrap();
    assert!(status.success());
    // A sentinel change proves the daemon processed all of the above: it must be the only URL purged.
    site.write("s07/page-050.html", "sentinel");
    let vims = wait_requests(&fake, Route::VimsPurge, 1, &d);
    let p = regex::Regex::new(&vims[0].pattern()).unwrap();
    let purged: Vec<&String> = files.iter().filter(|f| urls(f).iter().any(|u| p.is_match(u))).collect();
    assert_eq!(purged, vec!["s07/page-050.html"], "pattern {}", vims[0].pattern());
    assert_plan_empty(&site);
}

#[test]
fn a_rename_purges_both_names() {
    let fake = Fake::start();
    let site = Site::new();
    site.write("blog/a.html", "a");
    site.write("blog/b.html", "b");
    site.write_rules(&site.rules_for(&fake, "300ms", ""));
    let d = site.start(&["run"]);
    d.wait_ready();
    std::fs::rename(site.root.join("blog/a.html"), site.root.join("blog/renamed.html")).unwrap();
    let vims = wait_requests(&fake, Route::VimsPurge, 1, &d);
    let p = vims[0].pattern();
    assert!(
        pattern_matches(&p, "/blog/a.html") && pattern_matches(&p, "/blog/renamed.html"),
        "{p}"
    );
    assert!(!pattern_matches(&p, "/blog/b.html"), "{p}");
    assert_plan_empty(&site);
}

#[test]
fn plan_explains_what_would_be_purged_and_why() {
    let fake = Fake::start();
    let site = Site::new();
    site.write("index.html", "home");
    site.write("blog/post.html", "post");
    site.write("blog/same.html", "same");
    site.write_rules(&site.rules_for(&fake, "300ms", "    exclude: [\"**/*.tmp\"]\n"));
    let (_, out, _) = site.run(&["plan"]);
    assert!(out.contains("no baseline yet"), "{out}");
    let mut d = site.start(&["run"]);
    d.wait_ready();
    d.signal("TERM");
    assert_eq!(d.wait_exit(), 0);

    site.write("blog/post.html", "post v2");
    site.write("blog/same.html", "same"); // identical bytes, new mtime
    site.write("blog/draft.tmp", "tmp");
    let (code, out, err) = site.run(&["plan"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("purge  blog/post.html  (modified)"), "{out}");
    assert!(out.contains("skip   blog/same.html  (identical content)"), "{out}");
    assert!(
        out.contains("skip   blog/draft.tmp  (excluded by \"**/*.tmp\")"),
        "{out}"
    );
    assert!(out.contains("target \"www\" (sitehost): 1 file, 1 request"), "{out}");
    assert!(out.contains("purge stack mystack on ch-server1"), "{out}");
    let line = out.lines().find(|l| l.contains("pattern")).unwrap();
    let pattern: String = serde_json::from_str(line.split("pattern ").nth(1).unwrap()).unwrap();
    assert!(
        pattern_matches(&pattern, "/blog/post.html") && !pattern_matches(&pattern, "/blog/same.html"),
        "{pattern}"
    );
    assert!(fake.requests().is_empty(), "plan sends nothing");
}

#[test]
fn dry_run_logs_each_purge_with_its_reason_and_sends_nothing() {
    let fake = Fake::start();
    let site = Site::new();
    site.write("blog/post.html", "post");
    site.write_rules(&site.rules_for(&fake, "300ms", "    exclude: [\"**/*.tmp\"]\n"));
    let d = site.start_with(&["run", "--dry-run"], &[]);
    d.wait_ready();
    site.write("blog/post.html", "post v2");
    site.write("blog/x.tmp", "tmp");
    d.wait_for_lines("would purge", 2);
    let lines = d.lines_containing("would purge");
    let cdn = lines.iter().find(|l| l.contains("target=cdn")).expect("a line for cdn");
    assert!(
        cdn.contains("pattern") && cdn.contains("blog/post") && cdn.contains("modified blog/post.html"),
        "{cdn}"
    );
    assert!(
        lines.iter().any(|l| l.contains("target=www") && l.contains("stack")),
        "{lines:?}"
    );
    assert!(!d.log().contains("sh-secret-key-123") && !d.log().contains("sk_live_testtoken"));
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(fake.requests().is_empty());
    assert!(!site.state.exists(), "a dry run writes no state");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let fake = Fake::start();
    let site = Site::new();
    site.write("a.html", "a");
    site.write_rules(&site.rules_for(&fake, "200ms", ""));
    let mut d = site.start(&["run", "--log-format", "json"]);
    d.wait_ready();
    site.write("a.html", "a2");
    d.wait_for_lines("purged", 2);
    d.signal("INT");
    assert_eq!(d.wait_exit(), 0);
    for line in d.log().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v.get("level").is_some(), "{line}");
    }
    assert!(
        d.lines_containing("\"target\":\"cdn\"")
            .iter()
            .any(|l| l.contains("purged")),
        "{}",
        d.log()
    );
}

#[test]
fn a_deploy_in_bursts_closer_than_the_debounce_is_one_batch() {
    let fake = Fake::start();
    let site = Site::new();
    site.write("index.html", "<link href=/css/site.css>");
    site.write("css/site.css", "body{}");
    site.write_rules(&site.rules_for(&fake, "1500ms", ""));
    let d = site.start(&["run"]);
    d.wait_ready();
    // The page first, the stylesheet it links 300 ms later: both must reach the CDN together,
    // or visitors get the new page with the old CSS.
    site.write("index.html", "<link href=/css/site.css?v=2>");
    std::thread::sleep(std::time::Duration::from_millis(300)); // the gap between two bursts of one deploy
    site.write("css/site.css", "body{color:red}");
    let vims = wait_requests(&fake, Route::VimsPurge, 1, &d);
    let p = vims[0].pattern();
    assert!(
        pattern_matches(&p, "/index.html") && pattern_matches(&p, "/css/site.css"),
        "{p}"
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(fake.vims_purges().len(), 1, "{}", d.log());
    assert_eq!(fake.sitehost_purges().len(), 1, "{}", d.log());
    assert_plan_empty(&site);
}

/// Two sites on one CDN. "Everything" for a site is its own URL space: most of site a changing
/// purges `/a/` (not `*`, which would wipe site b); and sites told apart by `base_url` get
/// patterns that name their host, so site a's purge never matches site b's full-URL or
/// host-and-path keys.
#[test]
fn two_sites_on_one_cdn_never_purge_each_other() {
    let fake = Fake::start();
    let site = Site::new();
    for s in ["a", "b"] {
        for i in 0..60 {
            site.write(&format!("{s}/p{i}.html"), "v1");
        }
    }
    let rules = site.rules_for(&fake, "300ms", "").replace(
        "rules:\n  - name: site\n    watch: public\n    targets: [www, cdn]\n",
        "rules:\n  - name: a\n    watch: public/a\n    targets: [cdn]\n    url_prefix: /a/\n  - name: b\n    watch: public/b\n    targets: [cdn]\n    url_prefix: /b/\n  - name: a-host\n    watch: public/a\n    targets: [cdn]\n    base_url: https://www.a.example\n  - name: b-host\n    watch: public/b\n    targets: [cdn]\n    base_url: https://www.b.example\n",
    );
    site.write_rules(&rules);
    let (code, _, err) = site.run(&["check"]);
    assert!(code == 0, "{err}");
    let d = site.start(&["run"]);
    d.wait_ready();
    // Most of site a: at least 50 files and half of them, so each rule on it purges its whole
    // URL space.
    for i in 0..55 {
        site.write(&format!("a/p{i}.html"), "v2");
    }
    let vims = wait_requests(&fake, Route::VimsPurge, 1, &d);
    // Give the batch time to send all its requests (one batch: a debounce after the last write).
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let pats: Vec<String> = fake.vims_purges().iter().map(|r| r.pattern()).collect();
    assert!(!vims.is_empty());
    assert!(!pats.iter().any(|p| p == "*"), "{pats:?}");
    let hit = |key: &str| pats.iter().any(|p| pattern_matches(p, key));
    // Rule a's space is its prefix; rule a-host's is its host's `/` (a path-only key carries no
    // host, so that one matches any path, as the contract says).
    assert!(pats.iter().any(|p| p == "^(?:[^/]*//)?[^/]*/a/"), "{pats:?}");
    assert!(
        pats.iter().any(|p| p == "^(?:[^/]*//)?(?:www\\.a\\.example)?/"),
        "{pats:?}"
    );
    for key in ["/a/p1.html", "https://www.a.example/p1.html", "www.a.example/p39.html"] {
        assert!(hit(key), "{key} not purged by {pats:?}");
    }
    for key in [
        "https://www.b.example/p1.html",
        "www.b.example/p1.html",
        "https://x.example/b/p1.html",
        "x.example/b/p1.html",
    ] {
        assert!(!hit(key), "{key} purged by {pats:?}");
    }
    assert_plan_empty(&site);
}

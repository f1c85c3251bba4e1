//! The daemon end to end: the real binary, real inotify on a temp directory, a local fake of both
//! providers.

mod common;

use common::*;
use std::time::Duration;

fn started(site: &Site, fake: &Fake, debounce: &str) -> Daemon {
    site.write("index.html", "<h1>home</h1>");
    site.write("blog/index.html", "<h1>blog</h1>");
    site.write("blog/post.html", "post v1");
    site.write("blog/other.html", "other");
    site.write_rules(&site.rules_for(fake, debounce, "    exclude: [\"**/*.tmp\", \"**/.*\"]\n"));
    let d = site.start(&["run"]);
    d.wait_ready();
    d
}

#[test]
fn a_single_change_is_one_sitehost_call_and_a_targeted_vims_pattern() {
    let site = Site::new();
    let fake = Fake::start();
    let d = started(&site, &fake, "300ms");
    site.write("blog/post.html", "post v2");
    let sh = wait_requests(&fake, Route::SiteHostPurge, 1, &d);
    let vims = wait_requests(&fake, Route::VimsPurge, 1, &d);
    // SiteHost form fields in the documented order.
    let form = sh[0].form();
    let keys: Vec<&str> = form.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["apikey", "client_id", "server", "name"]);
    assert_eq!(form[0].1, "sh-secret-key-123");
    assert_eq!(form[1].1, "12345");
    assert_eq!(form[3].1, "mystack");
    // VIMS: raw token, target all, a pattern that matches the changed URL in every form.
    assert_eq!(vims[0].path, "/api/services/cdn/7/purge");
    assert_eq!(vims[0].headers["authorization"], "sk_live_testtoken");
    assert_eq!(vims[0].json()["target"], "all");
    let p = vims[0].pattern();
    for url in [
        "/blog/post.html",
        "/blog/post.html?v=2",
        "https://example.com/blog/post.html",
    ] {
        assert!(pattern_matches(&p, url), "{p} must match {url}");
    }
    for url in ["/blog/other.html", "/index.html", "/blog/"] {
        assert!(!pattern_matches(&p, url), "{p} must not match {url}");
    }
    d.wait_for("purged");
    let log = d.log();
    assert!(
        !log.contains("sh-secret-key-123") && !log.contains("sk_live_testtoken"),
        "secret in log:\n{log}"
    );
    // Nothing more is sent.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(fake.sitehost_purges().len(), 1);
    assert_eq!(fake.vims_purges().len(), 1);
    assert_plan_empty(&site);
}

#[test]
fn a_500_file_burst_is_one_sitehost_call() {
    let site = Site::new();
    let fake = Fake::start();
    let d = started(&site, &fake, "1s");
    for i in 0..500 {
        site.write(&format!("burst/p{i}.html"), &format!("page {i}"));
    }
    wait_requests(&fake, Route::SiteHostPurge, 1, &d);
    wait_requests(&fake, Route::VimsPurge, 1, &d);
    d.wait_for_lines("purged", 2);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(fake.sitehost_purges().len(), 1, "{}", d.log());
    // VIMS: as few calls as the pattern size allows; every new URL covered.
    let pats: Vec<String> = fake.vims_purges().iter().map(|r| r.pattern()).collect();
    assert!(pats.len() <= 3, "{pats:?}");
    for i in [0, 17, 499] {
        let url = format!("/burst/p{i}.html");
        assert!(
            pats.iter().any(|p| pattern_matches(p, &url)),
            "{url} not covered by {pats:?}"
        );
    }
    assert_plan_empty(&site);
}

#[test]
fn a_new_nested_directory_is_seen() {
    let site = Site::new();
    let fake = Fake::start();
    let d = started(&site, &fake, "300ms");
    let deep = site.root.join("a/b/c");
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("x.html"), "x").unwrap();
    let vims = wait_requests(&fake, Route::VimsPurge, 1, &d);
    let p = vims[0].pattern();
    assert!(pattern_matches(&p, "/a/b/c/x.html"), "{p}");
    // A file written later in the new directory is watched too.
    std::fs::write(deep.join("y.html"), "y").unwrap();
    let vims = wait_requests(&fake, Route::VimsPurge, 2, &d);
    assert!(
        pattern_matches(&vims[1].pattern(), "/a/b/c/y.html"),
        "{}",
        vims[1].pattern()
    );
    assert_plan_empty(&site);
}

#[test]
fn excluded_files_and_identical_rewrites_send_nothing() {
    let site = Site::new();
    let fake = Fake::start();
    let d = started(&site, &fake, "300ms");
    site.write("blog/draft.tmp", "tmp");
    site.write(".hidden", "h");
    site.write("blog/post.html", "post v1"); // same bytes
    touch_rel(&site.root, "index.html");
    // A real change afterwards proves the daemon was listening; it must be the only purge.
    std::thread::sleep(Duration::from_millis(100));
    site.write("blog/other.html", "other v2");
    let vims = wait_requests(&fake, Route::VimsPurge, 1, &d);
    let p = vims[0].pattern();
    assert!(pattern_matches(&p, "/blog/other.html"), "{p}");
    for url in ["/blog/draft.tmp", "/.hidden", "/blog/post.html", "/index.html"] {
        assert!(!pattern_matches(&p, url), "{p} must not match {url}");
    }
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(fake.vims_purges().len(), 1, "{}", d.log());
    assert_eq!(fake.sitehost_purges().len(), 1);
    assert_plan_empty(&site);
}

#[test]
fn deleted_files_are_purged() {
    let site = Site::new();
    let fake = Fake::start();
    let d = started(&site, &fake, "300ms");
    std::fs::remove_file(site.root.join("blog/post.html")).unwrap();
    let vims = wait_requests(&fake, Route::VimsPurge, 1, &d);
    assert!(pattern_matches(&vims[0].pattern(), "/blog/post.html"));
    assert_plan_empty(&site);
}

#[test]
fn max_delay_caps_constant_writes() {
    let site = Site::new();
    let fake = Fake::start();
    site.write("index.html", "x");
    site.write_rules(
        &site
            .rules_for(&fake, "1s", "")
            .replace("max_delay: 30s", "max_delay: 2s"),
    );
    let d = site.start(&["run"]);
    d.wait_ready();
    let start = std::time::Instant::now();
    let mut i = 0;
    // Writes every 200 ms never leave 1 s of quiet: only max_delay lets a purge out.
    while fake.sitehost_purges().is_empty() {
        assert!(
            start.elapsed() < DEADLINE,
            "no purge under constant writes; log:\n{}",
            d.log()
        );
        site.write("busy.html", &format!("v{i}"));
        i += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(start.elapsed() >= Duration::from_secs(2), "not before max_delay");
    assert_plan_empty(&site);
}

#[test]
fn sigterm_sends_the_pending_batch_and_exits_0() {
    stop_sends_the_pending_batch_and_exits_0("TERM");
}

#[test]
fn sigint_sends_the_pending_batch_and_exits_0() {
    stop_sends_the_pending_batch_and_exits_0("INT");
}

fn stop_sends_the_pending_batch_and_exits_0(signal: &str) {
    let site = Site::new();
    let fake = Fake::start();
    site.write("index.html", "<h1>home</h1>");
    site.write("blog/post.html", "post v1");
    site.write_rules(&site.rules_for(&fake, "1h", ""));
    let mut d = site.start_with(&["run"], &[("RUST_LOG", "info,purgewatch=debug")]);
    d.wait_ready();
    site.write("blog/post.html", "post v3");
    // Once the daemon has seen the change, stop it: the 1h debounce must not hold the purge back.
    d.wait_for("change seen");
    d.signal(signal);
    assert_eq!(d.wait_exit(), 0, "{}", d.log());
    assert_eq!(fake.sitehost_purges().len(), 1, "{}", d.log());
    let vims = fake.vims_purges();
    assert_eq!(vims.len(), 1);
    assert!(pattern_matches(&vims[0].pattern(), "/blog/post.html"));
    assert_plan_empty(&site);
}

#[test]
fn a_file_name_that_is_not_utf8_is_named_in_a_warning_and_never_guessed() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let site = Site::new();
    let fake = Fake::start();
    // One such file is there at start (the baseline walk), one arrives while the daemon runs.
    std::fs::write(site.root.join(OsStr::from_bytes(b"caf\xe9.html")), "old").unwrap();
    let d = started(&site, &fake, "300ms");
    assert_eq!(d.lines_containing("not UTF-8").len(), 1, "{}", d.log());
    std::fs::write(site.root.join("blog").join(OsStr::from_bytes(b"n\xff.html")), "x").unwrap();
    d.wait_for_lines("not UTF-8", 2);
    let warning = d.lines_containing("not UTF-8").pop().unwrap();
    assert!(
        warning.contains("/blog/n") && warning.contains("purge TARGET --all"),
        "{warning}"
    );
    // The daemon goes on: a real change is purged, and no guessed (lossy) name is in it.
    site.write("blog/post.html", "post v2");
    let vims = wait_requests(&fake, Route::VimsPurge, 1, &d);
    let p = vims[0].pattern();
    assert!(pattern_matches(&p, "/blog/post.html"), "{p}");
    assert!(!p.contains('\u{FFFD}'), "{p}");
    d.wait_for("purged");
    assert_eq!(
        d.lines_containing("not UTF-8").len(),
        2,
        "one warning per file\n{}",
        d.log()
    );
    assert_plan_empty(&site);
}

#[test]
fn a_stop_during_the_first_walk_of_a_big_tree_ends_it_at_once() {
    let site = Site::new();
    let fake = Fake::start();
    for d in 0..100 {
        let dir = site.root.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            std::fs::write(dir.join(format!("p{f}.html")), "x").unwrap();
        }
    }
    site.write_rules(&site.rules_for(&fake, "1s", ""));
    let mut d = site.start_with(&["run"], &[("RUST_LOG", "info,purgewatch=debug")]);
    d.wait_for("are handled from here on");
    d.signal("TERM");
    assert_eq!(d.wait_exit(), 0, "{}", d.log());
    let log = d.log();
    assert!(
        log.contains("the first baseline of this rule was not finished"),
        "{log}"
    );
    assert!(!log.contains("ready"), "{log}");
    // Nothing half-done was recorded: the next start takes the baseline whole.
    let (_, out, _) = site.run(&["plan"]);
    assert!(out.contains("no baseline yet"), "{out}");
}

//! Verifying what the edge serves after a purge, against a real caching proxy (tests/common/
//! edge.rs) that evicts only what the fake VIMS API was asked to purge.

mod common;

use common::*;

/// Rules with one VIMS target and one rule that verifies through `edge` (`verify_extra` goes
/// under `verify:`, `rule_extra` under the rule).
fn rules(site: &Site, fake: &Fake, base_url: &str, verify_extra: &str, rule_extra: &str) -> String {
    format!(
        r#"state_dir: {state}
defaults:
  debounce: 100ms
  retry_backoff: 100ms
  retry_backoff_max: 200ms
targets:
  cdn:
    type: vims
    api_url: {vims}
    token: sk_live_testtoken
    cdn_id: 7
rules:
  - name: site
    watch: public
    targets: [cdn]
    verify:
      base_url: {base_url}
      after: 100ms
{verify_extra}{rule_extra}"#,
        state = site.state.display(),
        vims = fake.vims_url(),
    )
}

/// A site with two pages, the edge in front of it with both cached, and the daemon running.
fn running(verify_extra: &str, rule_extra: &str, setup: impl FnOnce(&Edge)) -> (Site, Fake, Edge, Daemon) {
    let fake = Fake::start();
    let site = Site::new();
    site.write("index.html", "home");
    site.write("blog/post.html", "post v1");
    site.write("old.html", "old");
    let edge = Edge::start(site.root.clone(), &fake);
    setup(&edge);
    for p in ["/", "/blog/post.html", "/old.html"] {
        assert_eq!(edge.visit(p).0, 200);
    }
    site.write_rules(&rules(&site, &fake, &edge.base_url, verify_extra, rule_extra));
    let d = site.start(&["run"]);
    d.wait_ready();
    (site, fake, edge, d)
}

#[test]
fn a_change_is_purged_then_verified_fresh() {
    let (site, fake, edge, d) = running("", "", |_| {});
    site.write("blog/post.html", "post v2");
    d.wait_for("verified: the edge serves the new bytes");
    assert_eq!(fake.vims_purges().len(), 1);
    assert_eq!(edge.visit("/blog/post.html").1, b"post v2");
    let (_, out, _) = site.run(&["status"]);
    assert!(
        out.contains("last verification:") && out.contains("1 fresh, 0 stale"),
        "{out}"
    );
    assert_plan_empty(&site);
}

#[test]
fn a_purge_the_cache_ignored_is_purged_again_until_fresh() {
    let (site, fake, _edge, d) = running("", "", |e| e.ignore_next_purge());
    site.write("blog/post.html", "post v2");
    d.wait_for("verified: the edge serves the new bytes");
    let warn = d.lines_containing("stale after the purge");
    assert_eq!(warn.len(), 1, "{}", d.log());
    assert!(
        warn[0].contains("/blog/post.html") && warn[0].contains("x-cache: HIT"),
        "{}",
        warn[0]
    );
    assert_eq!(fake.vims_purges().len(), 2, "{}", d.log());
    assert!(!d.log().contains("still stale"));
}

#[test]
fn a_cache_that_never_evicts_is_an_error_after_the_repurges() {
    let (site, fake, edge, d) = running("      repurge: 1\n", "", |e| e.never_evict());
    site.write("blog/post.html", "post v2");
    d.wait_for("still stale");
    let err = d.lines_containing("still stale")[0].clone();
    assert!(
        err.contains("ERROR") && err.contains("stale") && err.contains(&format!("{}/blog/post.html", edge.base_url)),
        "{err}"
    );
    assert_eq!(fake.vims_purges().len(), 2, "one purge and one re-purge: {}", d.log());
    assert!(wait_until(DEADLINE, || site
        .run(&["status"])
        .1
        .contains("0 fresh, 1 stale")));
    let (_, out, _) = site.run(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["targets"]["cdn"]["last_verification"]["stale"], 1, "{v}");
    // `purgewatch verify` sees it too, and exits 1.
    let (code, out, _) = site.run(&["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("stale: {}/blog/post.html", edge.base_url)),
        "{out}"
    );
}

#[test]
fn a_deleted_file_is_fresh_when_the_edge_answers_404() {
    let (site, _fake, edge, d) = running("", "", |_| {});
    std::fs::remove_file(site.root.join("old.html")).unwrap();
    d.wait_for("verified: the edge serves the new bytes");
    assert_eq!(edge.visit("/old.html").0, 404);
    assert!(!d.log().contains("stale after the purge"), "{}", d.log());
}

#[test]
fn gzip_encoded_answers_are_compared_on_their_decoded_bytes() {
    let (site, _fake, edge, d) = running("", "", |e| e.gzip());
    site.write("blog/post.html", "post v2 ".repeat(100).as_str());
    d.wait_for("verified: the edge serves the new bytes");
    assert!(!d.log().contains("stale"), "{}", d.log());
    assert!(edge.gzipped() >= 1, "the check asked for gzip and got it");
}

#[test]
fn status_mode_checks_only_the_status_code() {
    let (site, _fake, _edge, d) = running("      check: status\n      repurge: 0\n", "", |e| e.never_evict());
    // The edge keeps serving the old bytes with 200: fine for `check: status`.
    site.write("blog/post.html", "post v2");
    d.wait_for("verified: the edge serves the new bytes");
    assert!(!d.log().contains("stale"), "{}", d.log());
}

#[test]
fn an_edge_that_is_down_is_a_warning_and_purging_goes_on() {
    let fake = Fake::start();
    let site = Site::new();
    site.write("index.html", "home");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    site.write_rules(&rules(&site, &fake, &base, "", ""));
    let d = site.start(&["run"]);
    d.wait_ready();
    site.write("index.html", "home v2");
    d.wait_for("could not verify");
    assert!(
        d.lines_containing("could not verify")[0].contains("WARN"),
        "{}",
        d.log()
    );
    // Nothing was checked: it says so, never "verified".
    d.wait_for("not verified: the edge did not answer");
    assert!(
        d.lines_containing("verified: the edge serves").is_empty(),
        "{}",
        d.log()
    );
    site.write("index.html", "home v3");
    wait_requests(&fake, Route::VimsPurge, 2, &d);
    assert_plan_empty(&site);
}

#[test]
fn warm_fetches_the_changed_urls_after_the_purge() {
    let (site, _fake, edge, d) = running("      sample: 0\n", "    warm: true\n", |_| {});
    let before = edge.hits("/blog/post.html");
    site.write("blog/post.html", "post v2");
    d.wait_for("warmed the edge");
    assert_eq!(edge.hits("/blog/post.html"), before + 1);
    // The warm request filled the cache with the new bytes.
    assert_eq!(edge.visit("/blog/post.html").1, b"post v2");
}

#[test]
fn verify_command_checks_the_tree_now() {
    let fake = Fake::start();
    let site = Site::new();
    site.write("index.html", "home");
    site.write("blog/post.html", "post v1");
    let edge = Edge::start(site.root.clone(), &fake);
    site.write_rules(&rules(&site, &fake, &edge.base_url, "", ""));
    let (code, out, err) = site.run(&["verify", "--all"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 checked") && out.contains("2 fresh"), "{out}");
    // Changed behind the edge's back (no daemon): stale, exit 1.
    site.write("blog/post.html", "post v2");
    let (code, out, _) = site.run(&["verify", "site", "--sample", "5"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("stale: {}/blog/post.html", edge.base_url)),
        "{out}"
    );
    assert!(
        !out.contains("stale: ") || out.lines().filter(|l| l.starts_with("stale: ")).count() == 1,
        "{out}"
    );
    // An unknown rule is a usage error.
    assert_eq!(site.run(&["verify", "nope"]).0, 2);
}

/// A SiteHost stack (origin) and a VIMS CDN (the edge) for one rule: verification waits until
/// both have finished (the SiteHost job ends first; the CDN task is still running), and a URL
/// still stale is purged again through both.
fn running_behind_two_targets(verify_extra: &str, setup: impl FnOnce(&Edge)) -> (Site, Fake, Edge, Daemon) {
    let fake = Fake::start();
    let site = Site::new();
    site.write("index.html", "home");
    site.write("blog/post.html", "post v1");
    let edge = Edge::start(site.root.clone(), &fake);
    setup(&edge);
    assert_eq!(edge.visit("/blog/post.html").0, 200);
    let rules = rules(&site, &fake, &edge.base_url, verify_extra, "")
        .replace(
            "targets:\n  cdn:",
            &format!(
                "targets:\n  www:\n    type: sitehost\n    api_url: {}\n    api_key: sh-secret-key-123\n    client_id: 1\n    server: s1\n    stack: st\n  cdn:",
                fake.sitehost_url()
            ),
        )
        .replace("    targets: [cdn]", "    targets: [www, cdn]");
    site.write_rules(&rules);
    let d = site.start(&["run"]);
    d.wait_ready();
    (site, fake, edge, d)
}

#[test]
fn verification_waits_for_every_target_of_the_rule() {
    let (site, fake, edge, d) = running_behind_two_targets("", |_| {});
    fake.set_task_state("STARTED");
    site.write("blog/post.html", "post v2");
    // The SiteHost job is done and the CDN task has been asked about a few times: no check yet.
    wait_requests(&fake, Route::SiteHostJob, 1, &d);
    wait_requests(&fake, Route::VimsTask, 3, &d);
    d.wait_for("provider finished the purge");
    assert!(d.lines_containing("stale after the purge").is_empty(), "{}", d.log());
    assert!(d.lines_containing("verified").is_empty(), "{}", d.log());
    fake.set_task_state("SUCCESS");
    d.wait_for("verified: the edge serves the new bytes");
    assert!(d.lines_containing("stale").is_empty(), "{}", d.log());
    assert_eq!(fake.sitehost_purges().len(), 1, "{}", d.log());
    assert_eq!(fake.vims_purges().len(), 1, "{}", d.log());
    assert_eq!(edge.visit("/blog/post.html").1, b"post v2");
}

#[test]
fn a_stale_url_is_purged_again_through_every_target_of_the_rule() {
    let (site, fake, _edge, d) = running_behind_two_targets("      repurge: 1\n", |e| e.never_evict());
    site.write("blog/post.html", "post v2");
    d.wait_for("still stale");
    assert_eq!(fake.sitehost_purges().len(), 2, "purge and re-purge: {}", d.log());
    assert_eq!(fake.vims_purges().len(), 2, "purge and re-purge: {}", d.log());
    let vims = fake.vims_purges();
    assert!(
        pattern_matches(&vims[1].pattern(), "/blog/post.html"),
        "{}",
        vims[1].pattern()
    );
    assert!(
        !pattern_matches(&vims[1].pattern(), "/index.html"),
        "exactly the stale URL: {}",
        vims[1].pattern()
    );
}

/// File names a URL must encode (`?`, `#`, `%`, a space, non-ASCII) are fetched encoded, as a
/// web server expects them: found fresh, never reported stale or re-purged.
#[test]
fn names_that_need_encoding_are_fetched_encoded() {
    let names = ["q?x.html", "h#x.html", "p%41.html", "a b.html", "café.html"];
    let (site, fake, _edge, d) = running("      sample: 10\n", "", |_| {});
    for n in names {
        site.write(n, "new page");
    }
    d.wait_for("verified: the edge serves the new bytes");
    assert!(d.lines_containing("stale").is_empty(), "{}", d.log());
    assert_eq!(fake.vims_purges().len(), 1, "no re-purge: {}", d.log());
    let (code, out, err) = site.run(&["verify", "--all"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// When the provider's task cannot be learned (404 for both task URLs), the batch is not
/// verified, and the log says so.
#[test]
fn a_task_that_cannot_be_learned_is_said_not_verified() {
    let (site, fake, _edge, d) = running("", "", |_| {});
    fake.script(
        Route::VimsTask,
        vec![
            Reply::vims_error(404, "no such task"),
            Reply::vims_error(404, "no such task"),
        ],
    );
    site.write("blog/post.html", "post v2");
    d.wait_for("not verified or warmed");
    assert!(
        d.lines_containing("verified: the edge serves").is_empty(),
        "{}",
        d.log()
    );
}

/// Warming a large URL streams its body and throws it away: the daemon's peak memory stays far
/// below the body's size.
#[test]
fn warming_a_large_url_does_not_hold_its_body() {
    let (site, _fake, _edge, d) = running("      sample: 0\n", "    warm: true\n", |_| {});
    let big = vec![b'x'; 256 * 1024 * 1024];
    std::fs::write(site.root.join("big.bin"), &big).unwrap();
    drop(big);
    d.wait_for("warmed the edge");
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.child.id())).unwrap();
    let hwm_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(
        hwm_kb < 128 * 1024,
        "peak RSS {hwm_kb} kB for a 256 MiB body\n{}",
        d.log()
    );
}

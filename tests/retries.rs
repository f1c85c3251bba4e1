//! Provider failures: retried with backoff when transient, not when permanent; a provider job
//! that fails after the purge was accepted is an error naming the target and the request.

mod common;

use common::*;
use std::time::Duration;

/// The daemon ready on a one-page site, and that page changed.
fn running(fake: &Fake) -> (Site, Daemon) {
    let (site, d) = Site::running(fake, "200ms");
    site.write("index.html", "home v2");
    (site, d)
}

fn json500() -> Reply {
    Reply::json(
        500,
        serde_json::json!({"status": false, "msg": "You have exceeded the number of requests per second"}),
    )
}

#[test]
fn three_500s_then_success() {
    let fake = Fake::start();
    fake.script(Route::SiteHostPurge, vec![json500(), json500(), json500()]);
    let (_site, d) = running(&fake);
    wait_requests(&fake, Route::SiteHostPurge, 4, &d);
    d.wait_for("purged target=\"www\"".replace('"', "").as_str());
    assert_eq!(
        d.lines_containing("will retry")
            .iter()
            .filter(|l| l.contains("www"))
            .count(),
        3,
        "{}",
        d.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(fake.sitehost_purges().len(), 4);
}

#[test]
fn retry_after_is_honoured() {
    let fake = Fake::start();
    fake.script(
        Route::VimsPurge,
        vec![
            Reply::json(429, serde_json::json!({"status": "error", "message": "slow down"})).header("retry-after", "2"),
        ],
    );
    let (_site, d) = running(&fake);
    let reqs = wait_requests(&fake, Route::VimsPurge, 2, &d);
    let gap = reqs[1].at - reqs[0].at;
    assert!(gap >= Duration::from_secs(2), "retried after {gap:?}");
}

#[test]
fn an_html_502_and_sitehost_status_false_are_retried() {
    let fake = Fake::start();
    fake.script(
        Route::VimsPurge,
        vec![Reply::html(502, "<html><body><h1>502 Bad Gateway</h1></body></html>")],
    );
    fake.script(
        Route::SiteHostPurge,
        vec![Reply::json(
            200,
            serde_json::json!({"status": false, "msg": "Internal error"}),
        )],
    );
    let (_site, d) = running(&fake);
    wait_requests(&fake, Route::VimsPurge, 2, &d);
    wait_requests(&fake, Route::SiteHostPurge, 2, &d);
    d.wait_for_lines("purged", 2);
    let log = d.log();
    assert!(log.contains("HTML page"), "{log}");
    assert!(log.contains("Internal error"), "{log}");
}

#[test]
fn a_401_is_one_error_and_no_retry_storm() {
    let fake = Fake::start();
    fake.script(
        Route::VimsPurge,
        vec![Reply::json(
            401,
            serde_json::json!({"status": "error", "message": "invalid token"}),
        )],
    );
    let (site, d) = running(&fake);
    d.wait_for("failed for good");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(fake.vims_purges().len(), 1, "{}", d.log());
    let errors = d.lines_containing("failed for good");
    assert_eq!(errors.len(), 1, "{}", d.log());
    assert!(
        errors[0].contains("cdn") && errors[0].contains("HTTP 401") && errors[0].contains("invalid token"),
        "{}",
        errors[0]
    );
    assert!(!d.log().contains("sk_live_testtoken"));
    // The next change is purged normally.
    site.write("index.html", "home v3");
    wait_requests(&fake, Route::VimsPurge, 2, &d);
}

#[test]
fn changes_during_a_retry_join_the_next_batch() {
    let fake = Fake::start();
    fake.script(Route::SiteHostPurge, vec![json500(), json500()]);
    let (site, d) = running(&fake);
    wait_requests(&fake, Route::SiteHostPurge, 1, &d);
    for i in 0..20 {
        site.write(&format!("later/p{i}.html"), "x");
    }
    wait_requests(&fake, Route::SiteHostPurge, 4, &d);
    std::thread::sleep(Duration::from_secs(2));
    // 3 attempts for the first batch, then one for everything that came in meanwhile.
    assert_eq!(fake.sitehost_purges().len(), 4, "{}", d.log());
}

#[test]
fn a_provider_job_that_fails_is_an_error_naming_target_and_request() {
    let fake = Fake::start();
    fake.set_job_state("Failed");
    fake.set_task_state("FAILURE");
    let (site, d) = running(&fake);
    d.wait_for_lines("the provider's purge job failed", 2);
    let lines = d.lines_containing("the provider's purge job failed");
    let line = |target: &str| {
        lines
            .iter()
            .find(|l| l.contains(&format!("target={target} ")))
            .unwrap_or_else(|| panic!("no line for {target}: {lines:?}"))
            .clone()
    };
    let (www, cdn) = (line("www"), line("cdn"));
    assert!(www.contains("ERROR") && www.contains("state=Failed"), "{www}");
    assert!(www.contains("request=purge stack mystack on ch-server1"), "{www}");
    assert!(cdn.contains("ERROR") && cdn.contains("state=FAILURE"), "{cdn}");
    assert!(cdn.contains("request=purge cdn 7") && cdn.contains("index"), "{cdn}");
    assert!(!d.log().contains("sh-secret-key-123") && !d.log().contains("sk_live_testtoken"));
    // `status` shows how each job ended.
    let (code, out, err) = site.run(&["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(": Failed") && out.contains(": FAILURE"), "{out}");
}

/// A provider whose tasks never end: at most 8 are followed per target, the oldest given up
/// with a warning, so pollers do not pile up on the rate limit with every batch.
#[test]
fn jobs_that_never_end_are_followed_at_most_eight_at_a_time() {
    let fake = Fake::start();
    fake.set_task_state("STARTED");
    let (site, d) = Site::running(&fake, "100ms");
    for i in 0..10 {
        site.write(&format!("p{i}.html"), "new");
        wait_requests(&fake, Route::VimsPurge, i + 1, &d);
    }
    d.wait_for_lines("no longer followed", 2);
    assert_eq!(d.lines_containing("no longer followed").len(), 2, "{}", d.log());
}

/// During an outage, what changed while a purge is retried is counted where a person looks:
/// `/metrics`' pending_files and `status` count it with the files being sent, `status` says a
/// purge is under way and at which retry (not "waiting for the debounce"), and once the provider
/// is back everything goes and both say none.
#[test]
fn files_changed_during_an_outage_are_counted_and_status_names_the_retry() {
    let fake = Fake::start();
    let outage: Vec<Reply> = (0..400)
        .map(|_| Reply::vims_error(503, "down for maintenance"))
        .collect();
    fake.script(Route::VimsPurge, outage);
    let site = Site::new();
    site.write("index.html", "home");
    for i in 0..30 {
        site.write(&format!("first/p{i}.html"), "v1");
    }
    // Made before: a new directory is one more path changed (and walked), not a file.
    std::fs::create_dir(site.root.join("later")).unwrap();
    let rules = site
        .rules_for(&fake, "200ms", "")
        .replace("defaults:", "metrics_listen: 127.0.0.1:0\ndefaults:")
        .replace("retry_backoff_max: 1s", "retry_backoff_max: 1s\n  retry_attempts: 1000")
        // The CDN alone: no other target's batch compares the tree meanwhile.
        .replace("targets: [www, cdn]", "targets: [cdn]");
    site.write_rules(&rules);
    let d = site.start(&["run"]);
    d.wait_ready();
    let addr = d.metrics_addr();
    for i in 0..30 {
        site.write(&format!("first/p{i}.html"), "v2");
    }
    wait_requests(&fake, Route::VimsPurge, 2, &d);
    for i in 0..300 {
        site.write(&format!("later/p{i}.html"), "x");
    }
    let mut last = String::new();
    let ok = wait_until(DEADLINE, || {
        let (_, out, _) = site.run(&["status"]);
        last = out;
        last.contains("pending: 330 files (300 changed, compared once the purge under way has ended)")
            && last.contains("sending: 30 files since")
            && last.contains("down for maintenance")
    });
    assert!(ok, "{last}\n{}", d.log());
    assert!(!last.contains("waiting for the debounce"), "{last}");
    let (_, json, _) = site.run(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["targets"]["cdn"]["pending_files"], 330, "{json}");
    assert_eq!(v["targets"]["cdn"]["sending"]["files"], 30, "{json}");
    assert!(
        v["targets"]["cdn"]["sending"]["retries"].as_i64().unwrap() >= 1,
        "{json}"
    );
    let metric = |body: &str| {
        body.lines()
            .find(|l| l.starts_with("purgewatch_pending_files{target=\"cdn\"}"))
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
    };
    let mut body = String::new();
    let ok = wait_until(DEADLINE, || {
        body = http_get(&addr, "/metrics").1;
        metric(&body).as_deref() == Some("330")
    });
    assert!(ok, "{:?}", metric(&body));
    // Back: everything goes, and nothing is said to be pending or under way.
    fake.unscript(Route::VimsPurge);
    let ok = wait_until(DEADLINE, || {
        let (_, out, _) = site.run(&["status"]);
        last = out;
        last.matches("pending: none").count() == 2 && !last.contains("sending:")
    });
    assert!(ok, "{last}\n{}", d.log());
    let ok = wait_until(DEADLINE, || {
        body = http_get(&addr, "/metrics").1;
        metric(&body).as_deref() == Some("0")
    });
    assert!(ok, "{:?}", metric(&body));
    assert_plan_empty(&site);
}

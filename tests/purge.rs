//! `purgewatch purge`: a manual purge through the same delivery code, with `--wait`.

mod common;

use common::*;

fn site_with(fake: &Fake) -> Site {
    let site = Site::new();
    site.write_rules(&site.rules_for(fake, "2s", ""));
    site
}

#[test]
fn sitehost_purge_wait_succeeds_when_the_job_completes() {
    let fake = Fake::start();
    let site = site_with(&fake);
    fake.set_job_state("Running");
    let f2 = fake.clone();
    // The job completes a little later.
    std::thread::spawn(move || {
        wait_until(DEADLINE, || !f2.requests_to(Route::SiteHostJob).is_empty());
        f2.set_job_state("Completed");
    });
    let (code, out, err) = site.run(&["purge", "www", "--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("finished: Completed"), "{out}");
    let job = &fake.requests_to(Route::SiteHostJob)[0];
    let q = job.query_pairs();
    assert!(q.contains(&("type".into(), "scheduler".into())), "{q:?}");
    assert!(q.iter().any(|(k, v)| k == "job_id" && !v.is_empty()));
    assert!(!err.contains("sh-secret-key-123") && !out.contains("sh-secret-key-123"));
}

#[test]
fn sitehost_purge_wait_exits_1_when_the_job_fails() {
    let fake = Fake::start();
    let site = site_with(&fake);
    fake.set_job_state("Failed");
    let (code, out, err) = site.run(&["purge", "www", "--wait"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("failed"), "{err}");
}

#[test]
fn vims_purge_urls_wait_success_and_failure() {
    let fake = Fake::start();
    let site = site_with(&fake);
    let (code, out, err) = site.run(&[
        "purge",
        "cdn",
        "--url",
        "/blog/a.html",
        "--url",
        "/blog/b.html",
        "--wait",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let p = fake.vims_purges()[0].pattern();
    assert!(
        pattern_matches(&p, "/blog/a.html") && pattern_matches(&p, "https://h/blog/b.html?x=1"),
        "{p}"
    );
    assert!(!pattern_matches(&p, "/blog/c.html"), "{p}");
    assert!(
        fake.requests_to(Route::VimsTask)[0].path.starts_with("/api/tasks/"),
        "documented task URL first"
    );

    fake.set_task_state("FAILURE");
    let (code, out, err) = site.run(&["purge", "cdn", "--all", "--wait"]);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(fake.vims_purges()[1].pattern(), "*");
}

#[test]
fn vims_task_url_falls_back_to_the_singular_form() {
    let fake = Fake::start();
    let site = site_with(&fake);
    fake.singular_task_path();
    let (code, out, err) = site.run(&["purge", "cdn", "--pattern", "\\.css", "--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    let tasks = fake.requests_to(Route::VimsTask);
    assert!(
        tasks.iter().any(|r| r.path.starts_with("/api/task/")),
        "{:?}",
        tasks.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
}

#[test]
fn a_refused_purge_exits_1_and_says_what_the_provider_said() {
    let fake = Fake::start();
    let site = site_with(&fake);
    fake.script(
        Route::VimsPurge,
        vec![Reply::json(
            400,
            serde_json::json!({"message": "failed creation : bad pattern", "status": "error"}),
        )],
    );
    let (code, out, err) = site.run(&["purge", "cdn", "--all"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("target \"cdn\"") && err.contains("failed creation : bad pattern") && err.contains("HTTP 400"),
        "{err}"
    );
    assert_eq!(fake.vims_purges().len(), 1, "a 400 is not retried");
}

#[test]
fn a_provider_that_keeps_failing_is_retried_briefly_then_exit_1() {
    let fake = Fake::start();
    let site = site_with(&fake);
    fake.script(
        Route::SiteHostPurge,
        (0..10).map(|_| Reply::html(502, "<h1>Bad Gateway</h1>")).collect(),
    );
    let (code, out, err) = site.run(&["purge", "www"]);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(fake.sitehost_purges().len(), 3, "3 attempts on the command line");
    assert!(err.contains("HTTP 502") && err.contains("after 3 attempts"), "{err}");
}

#[test]
fn usage_errors_exit_2_and_dry_run_sends_nothing() {
    let fake = Fake::start();
    let site = site_with(&fake);
    let (code, _, err) = site.run(&["purge", "cnd", "--all"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("did you mean \"cdn\""), "{err}");
    let (code, _, err) = site.run(&["purge", "cdn"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = site.run(&["purge", "cdn", "--all", "--url", "/x"]);
    assert_eq!(code, 2);
    let (code, out, err) = site.run(&["purge", "cdn", "--url", "/a.html", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("would send to \"cdn\""), "{out}");
    // A full URL names its path.
    let (code, out, err) = site.run(&["purge", "cdn", "--url", "https://example.com/blog/a.html", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    let pattern = out.split("pattern ").nth(1).unwrap_or_default().trim();
    let pattern: String = serde_json::from_str(pattern).unwrap_or_else(|e| panic!("{out}: {e}"));
    assert!(pattern_matches(&pattern, "/blog/a.html"), "{out}");
    assert!(pattern_matches(&pattern, "https://example.com/blog/a.html"), "{out}");
    assert!(!pattern.contains("example"), "{out}");
    // A pasted URL: its query and fragment go, its escapes are decoded (both spellings are
    // purged); an empty --url is refused, never `/`.
    let (code, out, err) = site.run(&[
        "purge",
        "cdn",
        "--url",
        "https://example.com/caf%C3%A9.html?v=2#x",
        "--dry-run",
    ]);
    assert_eq!(code, 0, "{err}");
    let pattern = out.split("pattern ").nth(1).unwrap_or_default().trim();
    let pattern: String = serde_json::from_str(pattern).unwrap_or_else(|e| panic!("{out}: {e}"));
    for key in [
        "/café.html",
        "/caf%C3%A9.html?v=2",
        "https://example.com/caf%c3%a9.html",
    ] {
        assert!(pattern_matches(&pattern, key), "{key}: {out}");
    }
    assert!(!pattern_matches(&pattern, "/"), "{out}");
    let (code, _, err) = site.run(&["purge", "cdn", "--url", ""]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--url"), "{err}");
    // An empty pattern would purge everything: --all says so.
    let (code, _, err) = site.run(&["purge", "cdn", "--pattern", ""]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--all"), "{err}");
    assert!(fake.requests().is_empty());
}

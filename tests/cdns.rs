//! Cloudflare, Fastly and Bunny targets on the real binary, against fakes that keep the
//! providers' documented shapes and limits (tests/common/fake.rs): Cloudflare's per-call maximum
//! (refused past it) and its 429s, Fastly's per-URL purge and soft purge, Bunny's per-URL purge
//! with a wildcard for a widened directory; credentials checked by each fake; never a secret in
//! any output.

mod common;

use common::fake::{BUNNY_KEY, CF_MAX_PER_CALL, CF_TOKEN, FASTLY_TOKEN};
use common::*;

fn targets(fake: &Fake, cf_token: &str) -> String {
    format!(
        "  cf:\n    type: cloudflare\n    zone_id: 023e105f4ecef8ad9ca31a8372d0c353\n    api_token: {cf_token}\n    api_url: http://{a}/cf\n    max_urls: 30\n  fastly:\n    type: fastly\n    service_id: SU1Z0isxPaozGVKXdv0eY\n    api_token: {FASTLY_TOKEN}\n    api_url: http://{a}/fastly\n    soft: true\n  bunny:\n    type: bunny\n    pull_zone_id: 12345\n    api_key: {BUNNY_KEY}\n    api_url: http://{a}/bunny\n",
        a = fake.addr
    )
}

/// A debounce long enough that one deploy is one batch even when a loaded machine pauses the
/// test between two writes (the tests count requests per batch).
fn site_with(fake: &Fake, rule_targets: &str, cf_token: &str) -> Site {
    let site = Site::new();
    site.write_rules(&format!(
        "state_dir: {}\ndefaults:\n  debounce: 1500ms\n  retry_backoff: 100ms\n  retry_backoff_max: 300ms\n  rate_limit: 100\ntargets:\n{}rules:\n  - name: site\n    watch: public\n    base_url: https://www.example.com\n    targets: [{rule_targets}]\n",
        site.state.display(),
        targets(fake, cf_token)
    ));
    site
}

fn everything_said(site: &Site, d: &Daemon) -> String {
    let mut all = d.log();
    for args in [&["status"][..], &["status", "--json"], &["plan"]] {
        let (_, out, err) = site.run(args);
        all.push_str(&out);
        all.push_str(&err);
    }
    all
}

#[test]
fn a_250_url_deploy_to_cloudflare_is_9_calls_within_its_limit_and_429s_are_retried() {
    let fake = Fake::start();
    // 600 files in 50 directories; 5 of each directory's 12 change: 250 URLs, no directory
    // widened, far from half of the site.
    let site = site_with(&fake, "cf", CF_TOKEN);
    for d in 0..50 {
        for f in 0..12 {
            site.write(&format!("d{d:02}/p{f:02}.html"), "v1");
        }
    }
    // Cloudflare's rate limit answers: with Retry-After, and without.
    fake.script(
        Route::CfPurge,
        vec![
            Reply::json(429, serde_json::json!({"success": false, "errors": [{"code": 971, "message": "Please wait and consider throttling your request speed"}]})).header("retry-after", "1"),
            Reply::json(429, serde_json::json!({"success": false, "errors": [{"code": 971, "message": "Please wait"}]})),
        ],
    );
    let d = site.start(&["run"]);
    d.wait_ready();
    for dir in 0..50 {
        for f in 0..5 {
            site.write(&format!("d{dir:02}/p{f:02}.html"), "v2");
        }
    }
    wait_requests(&fake, Route::CfPurge, 11, &d);
    // Showing that no more calls come needs a wait (see tests/common).
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let calls = fake.requests_to(Route::CfPurge).into_iter().skip(2).collect::<Vec<_>>();
    assert_eq!(calls.len(), 9, "{}", d.log());
    let mut files = Vec::new();
    for c in &calls {
        assert_eq!(c.headers["authorization"], format!("Bearer {CF_TOKEN}"));
        let v = c.json();
        let n = v["files"].as_array().map_or(0, |a| a.len());
        assert!(n <= CF_MAX_PER_CALL, "{v}");
        files.extend(
            v["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap().to_string()),
        );
    }
    files.sort();
    files.dedup();
    assert_eq!(files.len(), 250);
    assert!(
        files.iter().all(|f| f.starts_with("https://www.example.com/d")),
        "{files:?}"
    );
    assert_eq!(d.lines_containing("purge failed for good").len(), 0, "{}", d.log());
    let all = everything_said(&site, &d);
    assert!(!all.contains(CF_TOKEN), "the token leaked");
}

#[test]
fn cloudflare_prefixes_a_widened_directory_and_purges_everything_on_all() {
    let fake = Fake::start();
    let site = site_with(&fake, "cf", CF_TOKEN);
    for f in [
        "blog/a.html",
        "blog/b.html",
        "blog/c.html",
        "index.html",
        "about.html",
        "x.html",
        "y.html",
    ] {
        site.write(f, "v1");
    }
    let d = site.start(&["run"]);
    d.wait_ready();
    for f in ["blog/a.html", "blog/b.html", "blog/c.html"] {
        site.write(f, "v2");
    }
    let calls = wait_requests(&fake, Route::CfPurge, 1, &d);
    let v = calls[0].json();
    assert_eq!(v["prefixes"], serde_json::json!(["www.example.com/blog/"]), "{v}");
    let (code, _, err) = site.run(&["purge", "cf", "--all"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        fake.requests_to(Route::CfPurge).pop().unwrap().json(),
        serde_json::json!({"purge_everything": true})
    );
}

#[test]
fn fastly_purges_each_url_softly_and_bunny_wildcards_a_directory() {
    let fake = Fake::start();
    let site = site_with(&fake, "fastly, bunny", CF_TOKEN);
    for f in ["d/a.html", "d/b.html", "e/a.html", "e/b.html", "e/c.html", "index.html"] {
        site.write(f, "v1");
    }
    let d = site.start(&["run"]);
    d.wait_ready();
    // One file of e (exact) and all of d (a widened directory for Bunny).
    for f in ["d/a.html", "d/b.html", "e/a.html"] {
        site.write(f, "v2");
    }
    let fastly = wait_requests(&fake, Route::FastlyPurge, 3, &d);
    let mut paths: Vec<String> = fastly.iter().map(|r| r.path.clone()).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/fastly/purge/www.example.com/d/a.html",
            "/fastly/purge/www.example.com/d/b.html",
            "/fastly/purge/www.example.com/e/a.html"
        ]
    );
    assert!(
        fastly
            .iter()
            .all(|r| r.headers.get("fastly-soft-purge").map(String::as_str) == Some("1"))
    );
    assert!(fastly.iter().all(|r| r.headers["fastly-key"] == FASTLY_TOKEN));
    let bunny = wait_requests(&fake, Route::BunnyPurge, 2, &d);
    let mut urls: Vec<String> = bunny
        .iter()
        .map(|r| r.query_pairs().into_iter().find(|(k, _)| k == "url").unwrap().1)
        .collect();
    urls.sort();
    assert_eq!(
        urls,
        ["https://www.example.com/d/*", "https://www.example.com/e/a.html"]
    );
    // --all: each one's "everything".
    for (t, route) in [("fastly", Route::FastlyAll), ("bunny", Route::BunnyAll)] {
        let (code, _, err) = site.run(&["purge", t, "--all"]);
        assert_eq!(code, 0, "{t}: {err}");
        assert_eq!(fake.requests_to(route).len(), 1, "{t}");
    }
    let all = everything_said(&site, &d);
    for secret in [FASTLY_TOKEN, BUNNY_KEY] {
        assert!(!all.contains(secret), "{secret} leaked");
    }
    assert_plan_empty(&site);
}

#[test]
fn check_remote_asks_each_cdn_and_bad_keys_are_refused_with_positions() {
    let fake = Fake::start();
    let site = site_with(&fake, "cf, fastly, bunny", CF_TOKEN);
    site.write("index.html", "home");
    let (code, out, err) = site.run(&["check", "--remote"]);
    assert_eq!(code, 0, "{out}{err}");
    for t in ["cf", "fastly", "bunny"] {
        assert!(out.contains(&format!("target \"{t}\"")), "{out}");
    }
    // A refused token: exit 1, the target named, the provider's words, no token.
    let site = site_with(&fake, "cf", "cf-wrong-token-999");
    site.write("index.html", "home");
    let (code, out, err) = site.run(&["check", "--remote"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("target \"cf\"") && err.contains("Authentication error"),
        "{err}"
    );
    assert!(!format!("{out}{err}").contains("cf-wrong-token-999"), "{err}");
    // A rule without base_url for a target that purges absolute URLs; a bad id.
    let good = std::fs::read_to_string(&site.rules).unwrap();
    let rules = good.replace("    base_url: https://www.example.com\n", "");
    site.write_rules(&rules);
    let (code, _, err) = site.run(&["check"]);
    assert_eq!(code, 2, "{err}");
    let rule_line = rules.lines().position(|l| l.starts_with("  - name: site")).unwrap() + 1;
    assert!(
        err.contains(&format!(
            "rules.yaml:{rule_line}:5: rule \"site\": target \"cf\" purges absolute URLs"
        )),
        "{err}"
    );
    site.write_rules(&good.replace("zone_id: 023e105f4ecef8ad9ca31a8372d0c353", "zone_id: 'x/../y'"));
    let (code, _, err) = site.run(&["check"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("zone_id: `x/../y` is not an id"), "{err}");
}

//! Monitoring on the real binary: `/metrics` (parsed with a Prometheus text parser), `/healthz`,
//! `status --json` and the `on_failure` hook.

mod common;

use common::*;
use std::collections::HashMap;
use std::process::{Command, Stdio};

/// The samples of a scrape: `name{labels}` (labels sorted) → value.
fn scrape(addr: &str) -> HashMap<String, f64> {
    let (code, body) = http_get(addr, "/metrics");
    assert_eq!(code, 200, "{body}");
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("the Prometheus text format");
    parsed
        .samples
        .into_iter()
        .filter_map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            let mut labels: Vec<(String, String)> =
                s.labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            labels.sort();
            let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            Some((format!("{}{{{}}}", s.metric, labels.join(",")), value))
        })
        .collect()
}

fn value(samples: &HashMap<String, f64>, key: &str) -> f64 {
    samples.get(key).copied().unwrap_or(0.0)
}

fn running_with(fake: &Fake, extra_top: &str) -> (Site, Daemon) {
    let site = Site::new();
    site.write("index.html", "home");
    site.write("blog/post.html", "post");
    site.write_rules(&format!(
        "metrics_listen: 127.0.0.1:0\n{extra_top}{}",
        site.rules_for(fake, "200ms", "")
    ));
    let d = site.start(&["run"]);
    d.wait_ready();
    (site, d)
}

#[test]
fn metrics_count_accepted_retried_and_failed_purges() {
    let fake = Fake::start();
    let (site, d) = running_with(&fake, "");
    let addr = d.metrics_addr();
    let s = scrape(&addr);
    assert!(
        s.keys().any(|k| k.starts_with("purgewatch_build_info{version=")),
        "{s:?}"
    );

    // A change: both targets accept.
    site.write("blog/post.html", "post v2");
    wait_requests(&fake, Route::VimsPurge, 1, &d);
    wait_requests(&fake, Route::SiteHostPurge, 1, &d);
    assert!(wait_until(DEADLINE, || {
        let s = scrape(&addr);
        value(
            &s,
            "purgewatch_purge_requests_total{outcome=accepted,provider=vims,target=cdn}",
        ) == 1.0
            && value(
                &s,
                "purgewatch_purge_requests_total{outcome=accepted,provider=sitehost,target=www}",
            ) == 1.0
    }));
    let s = scrape(&addr);
    assert_eq!(value(&s, "purgewatch_purged_files_total{target=cdn}"), 1.0, "{s:?}");
    assert_eq!(value(&s, "purgewatch_pending_files{target=cdn}"), 0.0);
    assert_eq!(
        value(&s, "purgewatch_purge_latency_seconds_count{target=cdn}"),
        1.0,
        "{s:?}"
    );
    assert!(value(&s, "purgewatch_last_success_timestamp_seconds{target=cdn}") > 1.6e9);
    assert!(value(&s, "purgewatch_events_total{rule=site}") >= 1.0);
    assert_eq!(value(&s, "purgewatch_manifest_files{rule=site}"), 2.0);

    // A 500 that is retried, then accepted.
    fake.script(Route::VimsPurge, vec![Reply::vims_error(500, "busy")]);
    site.write("blog/post.html", "post v3");
    wait_requests(&fake, Route::VimsPurge, 3, &d);
    assert!(wait_until(DEADLINE, || {
        value(
            &scrape(&addr),
            "purgewatch_purge_requests_total{outcome=accepted,provider=vims,target=cdn}",
        ) == 2.0
    }));
    let s = scrape(&addr);
    assert_eq!(
        value(
            &s,
            "purgewatch_purge_requests_total{outcome=retried,provider=vims,target=cdn}"
        ),
        1.0
    );
    assert_eq!(
        value(&s, "purgewatch_retries_total{reason=5xx,target=cdn}"),
        1.0,
        "{s:?}"
    );

    // A 401 that fails for good.
    fake.script(Route::VimsPurge, vec![Reply::vims_error(401, "invalid token")]);
    site.write("blog/post.html", "post v4");
    d.wait_for("purge failed for good");
    assert!(wait_until(DEADLINE, || {
        value(
            &scrape(&addr),
            "purgewatch_purge_requests_total{outcome=failed,provider=vims,target=cdn}",
        ) == 1.0
    }));
    let s = scrape(&addr);
    assert_eq!(value(&s, "purgewatch_purged_files_total{target=cdn}"), 2.0, "{s:?}");

    // Every metric the example alerting rules use is exported.
    let (_, body) = http_get(&addr, "/metrics");
    let exported: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let alerts = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/alerts.yaml")).unwrap();
    let used: std::collections::BTreeSet<&str> = regex::Regex::new(r"purgewatch_[a-z_]+")
        .unwrap()
        .find_iter(&alerts)
        .map(|m| m.as_str())
        .collect();
    assert!(used.len() >= 5, "{used:?}");
    for name in used {
        assert!(exported.contains(&name), "{name} is not exported: {exported:?}");
    }
}

#[test]
fn healthz_is_200_while_every_tree_is_watched_and_503_when_one_is_gone() {
    let fake = Fake::start();
    let (site, d) = running_with(&fake, "");
    let addr = d.metrics_addr();
    // Healthy as soon as it says it is ready.
    let (code, body) = http_get(&addr, "/healthz");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "ok");
    std::fs::remove_dir_all(&site.root).unwrap();
    assert!(
        wait_until(DEADLINE, || http_get(&addr, "/healthz").0 == 503),
        "{}",
        d.log()
    );
    let (_, body) = http_get(&addr, "/healthz");
    assert!(body.contains("public") && body.contains("missing"), "{body}");
    // Back again: healthy again.
    site.write("index.html", "home");
    assert!(
        wait_until(DEADLINE, || http_get(&addr, "/healthz").0 == 200),
        "{}",
        d.log()
    );
}

#[test]
fn a_port_in_use_is_an_error_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let fake = Fake::start();
    let site = Site::new();
    site.write_rules(&format!(
        "metrics_listen: {addr}\n{}",
        site.rules_for(&fake, "200ms", "")
    ));
    let mut d = site.start(&["run"]);
    assert_eq!(d.wait_exit(), 1, "{}", d.log());
    assert!(d.log().contains(&format!("metrics_listen {addr}")), "{}", d.log());
    // Refused, it leaves nothing behind: no state directory.
    assert!(!site.state.exists(), "{}", site.state.display());
}

#[test]
fn status_json_parses_and_has_the_contract_fields() {
    let fake = Fake::start();
    fake.script(Route::VimsPurge, vec![Reply::vims_error(401, "invalid token")]);
    let (site, d) = running_with(&fake, "");
    let (code, out, err) = site.run(&["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["targets"]["www"]["pending_files"], 0, "{v}");
    assert!(v["targets"]["cdn"]["last_purge"].is_null(), "{v}");
    site.write("index.html", "home v2");
    d.wait_for("purge failed for good");
    wait_requests(&fake, Route::SiteHostPurge, 1, &d);
    assert!(wait_until(DEADLINE, || {
        let (_, out, _) = site.run(&["status", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["targets"]["www"]["last_purge"]["outcome"] == "accepted"
            && v["targets"]["cdn"]["last_purge"]["outcome"] == "failed"
    }));
    let (_, out, _) = site.run(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let at = v["targets"]["www"]["last_purge"]["at"].as_str().unwrap();
    assert!(humantime::parse_rfc3339(at).is_ok(), "{at}");
    assert!(!out.contains("sk_live_testtoken"));
}

#[test]
fn on_failure_runs_with_what_failed_and_no_secret_in_its_environment() {
    let fake = Fake::start();
    fake.script(Route::VimsPurge, vec![Reply::vims_error(401, "invalid token")]);
    let site = Site::new();
    site.write("index.html", "home");
    let out = site.path("hook.env");
    let rules = site.rules_for(&fake, "200ms", "").replace(
        "    host: all\n",
        &format!(
            "    host: all\n    on_failure: [/bin/sh, -c, 'env > {} ; echo told >&2']\n",
            out.display()
        ),
    );
    site.write_rules(&rules);
    let d = site.start_with(&["run"], &[("HOOK_TEST_MARK", "inherited")]);
    d.wait_ready();
    site.write("index.html", "home v2");
    assert!(
        wait_until(DEADLINE, || std::fs::read_to_string(&out)
            .is_ok_and(|s| s.contains("PURGEWATCH_URLS"))),
        "{}",
        d.log()
    );
    let env = std::fs::read_to_string(&out).unwrap();
    assert!(env.contains("PURGEWATCH_TARGET=cdn"), "{env}");
    assert!(env.contains("PURGEWATCH_FILES=1"), "{env}");
    assert!(env.contains("PURGEWATCH_ERROR=") && env.contains("HTTP 401"), "{env}");
    assert!(env.contains("/index.html"), "{env}");
    assert!(
        !env.contains("sh-secret-key-123") && !env.contains("sk_live_testtoken"),
        "{env}"
    );
    // The daemon's environment is inherited, but not a variable that holds a secret.
    assert!(env.contains("HOOK_TEST_MARK=inherited"), "{env}");
    assert!(!env.contains("PW_TEST_SITEHOST_KEY"), "{env}");
    d.wait_for("on_failure /bin/sh ran");
    assert!(
        d.lines_containing("on_failure /bin/sh ran")[0].contains("told"),
        "{}",
        d.log()
    );
    // The other target (SiteHost, no hook configured at target level) was purged normally.
    wait_requests(&fake, Route::SiteHostPurge, 1, &d);
}

#[test]
fn a_reload_that_changes_metrics_listen_moves_the_endpoint() {
    let fake = Fake::start();
    let (site, d) = running_with(&fake, "");
    let first = d.metrics_addr();
    assert_eq!(http_get(&first, "/healthz").0, 200);
    // A reload with the same address keeps the listener.
    d.signal("HUP");
    d.wait_for("reloaded");
    assert_eq!(http_get(&first, "/healthz").0, 200);
    assert_eq!(
        d.lines_containing("serving /metrics and /healthz").len(),
        1,
        "{}",
        d.log()
    );
    // Another address: the endpoint moves there.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let second = taken.local_addr().unwrap().to_string();
    drop(taken);
    let rules = std::fs::read_to_string(&site.rules).unwrap();
    site.write_rules(&rules.replace("metrics_listen: 127.0.0.1:0", &format!("metrics_listen: {second}")));
    d.wait_for_lines("reloaded", 2);
    d.wait_for_lines("serving /metrics and /healthz", 2);
    assert_eq!(http_get(&second, "/healthz").0, 200);
    assert!(
        std::net::TcpStream::connect(&first).is_err(),
        "the old address still answers"
    );
    // A port in use: the working endpoint stays where it is, and says so.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let third = busy.local_addr().unwrap().to_string();
    let rules = std::fs::read_to_string(&site.rules).unwrap();
    site.write_rules(&rules.replace(
        &format!("metrics_listen: {second}"),
        &format!("metrics_listen: {third}"),
    ));
    d.wait_for(&format!("/metrics and /healthz stay on {second}"));
    assert_eq!(http_get(&second, "/healthz").0, 200);
    drop(busy);
}

/// Half-sent requests to `metrics_listen` cannot hold the daemon's descriptors: each connection
/// is closed when its headers do not come in time. And while the descriptors were all taken, a
/// file changed is not dropped ("skipped: unreadable"): it is read again and purged once
/// descriptors are free.
#[test]
fn idle_connections_are_closed_and_a_file_unreadable_for_want_of_descriptors_is_purged_later() {
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    let fake = Fake::start();
    let site = Site::new();
    site.write("index.html", "home");
    site.write("blog/post.html", "v1");
    site.write_rules(&format!(
        "metrics_listen: 127.0.0.1:0\n{}",
        site.rules_for(&fake, "200ms", "")
    ));
    let mut cmd = Command::new(bin());
    cmd.args(["run", "-c"])
        .arg(&site.rules)
        .env("PW_TEST_SITEHOST_KEY", "sh-secret-key-123")
        .env("RUST_LOG", "info")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // A small descriptor table (the daemon uses about 20 when idle), so that the endpoint's
    // connections can fill it.
    // SAFETY: setrlimit is async-signal-safe and touches no memory of the parent's.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 48,
                rlim_max: 48,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let d = Daemon::spawn(cmd);
    d.wait_ready();
    let addr = d.metrics_addr();
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", d.child.id()))
            .map(|r| r.count())
            .unwrap_or(0)
    };
    // Half-sent requests until the daemon's table is full.
    let mut idle = Vec::new();
    let full = wait_until(DEADLINE, || {
        if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
            let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n");
            idle.push(s);
        }
        fds() >= 48
    });
    assert!(full, "{} descriptors open\n{}", fds(), d.log());
    site.write("blog/post.html", "v2");
    d.wait_for("not read yet");
    drop(idle);
    // Read again once the idle connections are closed, and purged.
    let vims = wait_requests(&fake, Route::VimsPurge, 1, &d);
    assert!(
        pattern_matches(&vims[0].pattern(), "/blog/post.html"),
        "{}",
        vims[0].pattern()
    );
    assert!(
        wait_until(DEADLINE, || http_get(&addr, "/healthz").0 == 200),
        "{}",
        d.log()
    );
    assert!(!d.log().contains("skipped: unreadable"), "{}", d.log());
    assert_plan_empty(&site);
    // Half-sent requests kept open: the daemon closes them itself, and /healthz answers.
    let mut idle = Vec::new();
    for _ in 0..100 {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n");
        idle.push(s);
    }
    let (code, body) = http_get(&addr, "/healthz");
    assert_eq!(code, 200, "{body}\n{}", d.log());
    drop(idle);
}

/// A purge's latency counts from the batch's first change, debounce included, not from the
/// comparison at its end.
#[test]
fn latency_counts_from_the_first_change() {
    let fake = Fake::start();
    let site = Site::new();
    site.write("index.html", "home");
    site.write_rules(&format!(
        "metrics_listen: 127.0.0.1:0\n{}",
        site.rules_for(&fake, "1500ms", "")
    ));
    let d = site.start(&["run"]);
    d.wait_ready();
    let addr = d.metrics_addr();
    site.write("index.html", "home v2");
    d.wait_for("since_first_change=");
    let line = d.lines_containing("since_first_change=")[0].clone();
    // The last field of the line: `1s 504ms`.
    let value = line.split("since_first_change=").nth(1).unwrap().trim().to_string();
    let took = humantime::parse_duration(&value).unwrap_or_else(|e| panic!("{value:?}: {e}\n{line}"));
    assert!(took >= std::time::Duration::from_millis(1500), "{took:?}: {line}");
    let samples = scrape(&addr);
    let sum = samples
        .iter()
        .find(|(k, _)| k.starts_with("purgewatch_purge_latency_seconds_sum"))
        .map(|(_, v)| *v)
        .unwrap_or(0.0);
    assert!(sum >= 1.5, "{samples:?}");
}

/// A hook that leaves a helper running and exits is logged as run (its exit status and what it
/// said), at once, not "killed"; a hook still running at the time limit is killed with what it
/// started; `check` refuses a hook that cannot be run, with its position.
#[test]
fn hooks_are_judged_by_their_own_exit_and_killed_with_their_helpers() {
    let fake = Fake::start();
    fake.script(Route::VimsPurge, vec![Reply::vims_error(401, "invalid token"); 2]);
    let site = Site::new();
    site.write("index.html", "home");
    let pidfile = site.path("helper.pid");
    let hook = format!(
        "    host: all\n    on_failure: [/bin/sh, -c, 'sleep 120 & echo $! > {}; echo told >&2; exit 0']\n",
        pidfile.display()
    );
    let rules = site.rules_for(&fake, "200ms", "").replace("    host: all\n", &hook);
    site.write_rules(&rules);
    let d = site.start(&["run"]);
    d.wait_ready();
    site.write("index.html", "home v2");
    d.wait_for("on_failure /bin/sh ran");
    let line = d.lines_containing("on_failure /bin/sh ran")[0].clone();
    assert!(line.contains("told") && line.contains("exit status: 0"), "{line}");
    assert!(d.lines_containing("was killed").is_empty(), "{}", d.log());
    let helper: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    // The helper the hook left running is the hook's business: the test ends it.
    // SAFETY: kill(2) on a pid; no memory is touched.
    unsafe { libc::kill(helper, libc::SIGKILL) };

    // check: a relative, a missing and a non-executable program are refused where they are.
    let plain = site.path("plain.txt");
    std::fs::write(&plain, "not a program").unwrap();
    for (program, why) in [
        ("notify-ops", "absolute path"),
        ("/nonexistent/hook", "cannot be run"),
        (plain.to_str().unwrap(), "not executable"),
    ] {
        let bad = site.rules_for(&fake, "200ms", "").replace(
            "    host: all\n",
            &format!("    host: all\n    on_failure: [{program}, --x]\n"),
        );
        site.write_rules(&bad);
        let (code, _, err) = site.run(&["check"]);
        assert_eq!(code, 2, "{program}: {err}");
        let line = bad.lines().position(|l| l.contains("on_failure")).unwrap() + 1;
        assert!(
            err.contains(&format!("rules.yaml:{line}:17:")) && err.contains(why),
            "{program}: {err}"
        );
    }
}

#[test]
fn a_hook_still_running_is_killed_with_what_it_started() {
    let fake = Fake::start();
    fake.script(Route::VimsPurge, vec![Reply::vims_error(401, "invalid token")]);
    let site = Site::new();
    site.write("index.html", "home");
    let pidfile = site.path("helper.pid");
    let hook = format!(
        "    host: all\n    on_failure: [/bin/sh, -c, 'sleep 120 & echo $! > {}; sleep 120']\n",
        pidfile.display()
    );
    site.write_rules(&site.rules_for(&fake, "200ms", "").replace("    host: all\n", &hook));
    let d = site.start(&["run"]);
    d.wait_ready();
    site.write("index.html", "home v2");
    d.wait_for("was killed");
    let helper: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    // The helper is gone too (reaped by init once killed: its /proc entry goes).
    let gone = wait_until(DEADLINE, || {
        std::fs::read_to_string(format!("/proc/{helper}/stat"))
            .map_or(true, |s| s.split_whitespace().nth(2) == Some("Z"))
    });
    assert!(gone, "helper {helper} still running");
}

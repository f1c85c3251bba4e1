//! The webhook and command targets on the real binary: what they receive for a deploy (URLs in
//! chunks of `max_urls`, the changed files, a batch id stable across retries, a signature), how
//! their answers are judged (retried, failed for good, never followed), and what `check`,
//! `purge` and `plan` do with them. The webhook talks to the provider-neutral fake
//! (`POST /hook`); the command is a real script.

mod common;

use common::*;
use hmac::{Hmac, KeyInit, Mac};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const HOOK_SECRET: &str = "hook-secret-4567";

/// A site with `a.html`, `b.html`, `c.html` and the rules given (`targets:` and the rule's
/// target list).
fn site_with(targets: &str, rule_targets: &str) -> Site {
    let site = Site::new();
    write_rules(&site, targets, rule_targets);
    site
}

fn write_rules(site: &Site, targets: &str, rule_targets: &str) {
    for f in ["a.html", "b.html", "c.html"] {
        site.write(f, "v1");
    }
    site.write_rules(&format!(
        "state_dir: {}\ndefaults:\n  debounce: 200ms\n  retry_backoff: 100ms\n  retry_backoff_max: 200ms\ntargets:\n{targets}rules:\n  - name: site\n    watch: public\n    base_url: https://www.example.com\n    targets: [{rule_targets}]\n",
        site.state.display()
    ));
}

fn webhook(fake: &Fake, extra: &str) -> String {
    format!(
        "  hook:\n    type: webhook\n    url: {}\n    secret: {HOOK_SECRET}\n    max_urls: 2\n{extra}",
        fake.hook_url()
    )
}

fn sign(body: &str) -> String {
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

#[test]
fn a_webhook_gets_the_changed_urls_in_chunks_signed_with_a_stable_batch_id() {
    let fake = Fake::start();
    // The first request fails (503): its retry carries the same batch id.
    fake.script(Route::Hook, vec![Reply::json(503, serde_json::json!({"busy": true}))]);
    let site = site_with(&webhook(&fake, ""), "hook");
    let d = site.start(&["run"]);
    d.wait_ready();
    for f in ["a.html", "b.html", "c.html"] {
        site.write(f, "v2");
    }
    // 3 URLs at 2 a request: 2 requests, the first tried twice.
    let hooks = wait_requests(&fake, Route::Hook, 3, &d);
    let mut urls = Vec::new();
    for h in &hooks {
        let sig = h.headers.get("x-purgewatch-signature").cloned().unwrap_or_default();
        assert_eq!(sig, sign(&h.body), "signed body");
        let v = h.json();
        assert_eq!(v["target"], "hook");
        assert_eq!(v["everything"], false);
        assert!(v["urls"].as_array().unwrap().len() <= 2, "{v}");
        assert!(!v["files"].as_array().unwrap().is_empty(), "{v}");
    }
    assert_eq!(
        hooks[0].json()["batch"],
        hooks[1].json()["batch"],
        "a retry keeps its batch id"
    );
    for h in &hooks[1..] {
        urls.extend(
            h.json()["urls"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u.as_str().unwrap().to_string()),
        );
    }
    urls.sort();
    assert_eq!(
        urls,
        ["a.html", "b.html", "c.html"].map(|f| format!("https://www.example.com/{f}")),
        "{}",
        d.log()
    );
    let files = hooks[1].json()["files"].clone();
    assert_eq!(files[0]["rule"], "site");
    assert_eq!(files[0]["change"], "modified");
    assert!(!d.log().contains(HOOK_SECRET));
    assert_plan_empty(&site);
}

#[test]
fn a_webhook_that_refuses_redirects_or_floods_is_judged_by_its_status() {
    let fake = Fake::start();
    let elsewhere = Fake::start();
    let site = site_with(&webhook(&fake, ""), "hook");
    // 413: fails for good at once; 301: an error naming where it pointed, never followed.
    fake.script(
        Route::Hook,
        vec![Reply::json(413, serde_json::json!({"error": "too large"}))],
    );
    let (code, _, err) = site.run(&["purge", "hook", "--all"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("HTTP 413"), "{err}");
    assert_eq!(fake.requests_to(Route::Hook).len(), 1, "a 413 is not retried");
    fake.script(
        Route::Hook,
        vec![Reply::json(301, serde_json::json!({})).header("location", &elsewhere.hook_url())],
    );
    let (code, _, err) = site.run(&["purge", "hook", "--url", "/a.html"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("redirected to") && err.contains(&elsewhere.hook_url()),
        "{err}"
    );
    assert!(elsewhere.requests().is_empty(), "never followed");
    // A 10 MB answer with 200 is a success: only the status decides, and it is not held.
    let big = "x".repeat(10 * 1024 * 1024);
    fake.script(Route::Hook, vec![Reply::html(200, &big)]);
    let (code, out, err) = site.run(&["purge", "hook", "--url", "/a.html", "--url", "/b.html"]);
    assert_eq!(code, 0, "{out}{err}");
    let last = fake.requests_to(Route::Hook).pop().unwrap().json();
    assert_eq!(last["urls"].as_array().unwrap().len(), 2, "{last}");
    assert!(!format!("{out}{err}").contains(HOOK_SECRET));
    // A pattern is not a URL list.
    let (code, _, err) = site.run(&["purge", "hook", "--pattern", "x"]);
    assert_eq!(code, 2, "{err}");
    // --all: everything.
    let (code, _, err) = site.run(&["purge", "hook", "--all"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(fake.requests_to(Route::Hook).pop().unwrap().json()["everything"], true);
}

/// A webhook that accepts the connection and never answers: the request times out (30 s) and
/// is retried with the same batch id, while the daemon goes on serving the other target.
#[test]
fn a_webhook_that_never_answers_times_out_and_is_retried() {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let heads = held.clone();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            // Read what comes (head and body) until the client goes quiet; then keep the
            // connection open, never answered.
            conn.set_read_timeout(Some(std::time::Duration::from_millis(300)))
                .unwrap();
            let mut got = Vec::new();
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            heads
                .lock()
                .unwrap()
                .push((String::from_utf8_lossy(&got).into_owned(), conn));
        }
    });
    let fake = Fake::start();
    let silent = format!(
        "  hook:\n    type: webhook\n    url: http://{addr}/hook\n    secret: {HOOK_SECRET}\n  cdn:\n    type: vims\n    api_url: {}\n    token: sk_live_testtoken\n    cdn_id: 7\n",
        fake.vims_url()
    );
    let site = site_with(&silent, "hook, cdn");
    let d = site.start(&["run"]);
    d.wait_ready();
    site.write("a.html", "v2");
    // The other target is not held up by the silent one.
    wait_requests(&fake, Route::VimsPurge, 1, &d);
    d.wait_for("purge failed, will retry");
    let line = d.lines_containing("purge failed, will retry")[0].clone();
    assert!(line.contains("hook") && line.contains("timed out"), "{line}");
    // Retried: the second attempt connects, with the same batch id.
    assert!(wait_until(DEADLINE, || held.lock().unwrap().len() >= 2), "{}", d.log());
    let batch = |i: usize| {
        let text = held.lock().unwrap()[i].0.clone();
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
        serde_json::from_str::<serde_json::Value>(&body).map(|v| v["batch"].clone())
    };
    let first = batch(0).expect("a JSON body");
    assert!(first.is_string(), "{first}");
    assert!(wait_until(DEADLINE, || batch(1).is_ok()), "the retry's body");
    assert_eq!(batch(1).unwrap(), first, "the same batch id on the retry");
    assert!(!d.log().contains(HOOK_SECRET));
}

/// A script that writes its standard input and its environment to `log` and exits with the
/// code in `exit` (0 when the file is missing), sleeping when the code is `sleep`.
fn script(dir: &Path) -> PathBuf {
    let path = dir.join("purge-my-cdn");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nlog={0}/cmd.log\necho \"--- $PURGEWATCH_TARGET $PURGEWATCH_BATCH\" >> $log\ncat >> $log\nenv | grep -c sh-secret-key >> {0}/cmd.env\ncode=$(cat {0}/exit 2>/dev/null || echo 0)\nrm -f {0}/exit\nif [ \"$code\" = sleep ]; then sleep 60; fi\necho \"said: code $code\" >&2\nexit $code\n",
            dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn command_target(program: &Path, extra: &str) -> String {
    format!(
        "  script:\n    type: command\n    command: [{}, --zone, main]\n    timeout: 2s\n    max_urls: 2\n{extra}",
        program.display()
    )
}

#[test]
fn a_command_reads_the_urls_and_is_retried_on_75_and_on_its_timeout() {
    let site = Site::new();
    let program = script(site.dir.path());
    let fake = Fake::start();
    let targets = format!(
        "{}  www:\n    type: sitehost\n    api_url: {}\n    api_key: ${{PW_TEST_SITEHOST_KEY}}\n    client_id: 1\n    server: s\n    stack: st\n",
        command_target(&program, ""),
        fake.sitehost_url()
    );
    write_rules(&site, &targets, "script, www");
    let log = program.parent().unwrap().join("cmd.log");
    let exit = program.parent().unwrap().join("exit");
    let (code, _, err) = site.run(&["check", "--remote"]);
    assert_eq!(code, 0, "{err}");
    let d = site.start(&["run"]);
    d.wait_ready();
    // The first run says 75 (try again later): retried.
    std::fs::write(&exit, "75").unwrap();
    site.write("a.html", "v2");
    assert!(
        wait_until(DEADLINE, || std::fs::read_to_string(&log)
            .is_ok_and(|l| l.matches("--- script").count() >= 2)),
        "{}",
        d.log()
    );
    d.wait_for("purged target=script");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("https://www.example.com/a.html\n"), "{text}");
    let batches: Vec<&str> = text.lines().filter(|l| l.starts_with("--- script")).collect();
    assert_eq!(batches[0], batches[1], "a retry keeps its batch id: {text}");
    // No secret in its environment: the variable the SiteHost key came from is not passed.
    let env = std::fs::read_to_string(program.parent().unwrap().join("cmd.env")).unwrap();
    assert!(env.lines().all(|l| l.trim() == "0"), "{env}");
    // A run that hangs is killed at its timeout and retried.
    std::fs::write(&exit, "sleep").unwrap();
    site.write("b.html", "v2");
    d.wait_for("killed");
    d.wait_for_lines("purged target=script", 2);
    assert_plan_empty(&site);
}

#[test]
fn a_command_that_fails_or_is_gone_fails_for_good_quoting_it() {
    let site = Site::new();
    let program = script(site.dir.path());
    let dir = program.parent().unwrap().to_path_buf();
    write_rules(&site, &command_target(&program, ""), "script");
    std::fs::write(dir.join("exit"), "3").unwrap();
    let (code, _, err) = site.run(&["purge", "script", "--url", "/a.html"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("exit 3") && err.contains("said: code 3"), "{err}");
    // `*` alone for everything.
    let (code, _, err) = site.run(&["purge", "script", "--all"]);
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::read_to_string(dir.join("cmd.log")).unwrap().ends_with("*\n"));
    // Deleted between check and the purge.
    std::fs::remove_file(&program).unwrap();
    let (code, _, err) = site.run(&["purge", "script", "--all"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot run it"), "{err}");
    let (code, _, err) = site.run(&["check", "--remote"]);
    assert_eq!(code, 1, "{err}");
}

#[test]
fn bad_keys_of_the_new_types_are_refused_with_positions() {
    let fake = Fake::start();
    let targets = "  hook:\n    type: webhook\n    url: ftp://x/y\n    max_urls: 0\n  script:\n    type: command\n    command: [purge-my-cdn]\n    timeout: soon\n";
    let site = site_with(targets, "hook, script");
    let (code, _, err) = site.run(&["check"]);
    assert_eq!(code, 2, "{err}");
    for want in [
        "rules.yaml:9:10: target \"hook\": url: the scheme `ftp`",
        "rules.yaml:10:15: target \"hook\": max_urls must be at least 1",
        "rules.yaml:13:14: target \"script\": command: `purge-my-cdn` is not an absolute path",
        "rules.yaml:14:14: target \"script\": timeout:",
    ] {
        assert!(err.contains(want), "missing {want:?} in\n{err}");
    }
    drop(fake);
}

/// A command that floods its output, or leaves a helper holding the pipe: judged by its own exit
/// at once, the end of its output quoted (bounded), the helper not waited for.
#[test]
fn a_command_that_floods_or_leaves_a_helper_is_judged_by_its_exit() {
    let site = Site::new();
    let dir = site.dir.path().to_path_buf();
    let flood = dir.join("flood");
    std::fs::write(
        &flood,
        "#!/bin/sh\nhead -c 20000000 /dev/zero | tr '\\0' x\necho ' the end'\nexit 3\n",
    )
    .unwrap();
    let helper = dir.join("helper");
    let pidfile = dir.join("helper.pid");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nsleep 300 &\necho $! > {}\necho started\nexit 0\n",
            pidfile.display()
        ),
    )
    .unwrap();
    for p in [&flood, &helper] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let targets = format!(
        "{}{}",
        command_target(&flood, "").replace("  script:", "  flood:"),
        command_target(&helper, "").replace("  script:", "  helper:")
    );
    write_rules(&site, &targets, "flood, helper");
    let (code, _, err) = site.run(&["purge", "flood", "--url", "/a.html"]);
    assert_eq!(code, 1, "{}", &err[..err.len().min(2000)]);
    assert!(
        err.contains("exit 3") && err.contains("the end"),
        "{}",
        &err[..err.len().min(2000)]
    );
    assert!(err.len() < 100_000, "the output is quoted bounded: {} bytes", err.len());
    let started = std::time::Instant::now();
    let (code, out, err) = site.run(&["purge", "helper", "--url", "/a.html"]);
    assert_eq!(code, 0, "{out}{err}");
    // The helper sleeps 300 s: waiting for it would take that long.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(120),
        "{:?}",
        started.elapsed()
    );
    // The helper is the command's business; the test ends it.
    if let Ok(pid) = std::fs::read_to_string(&pidfile)
        .unwrap_or_default()
        .trim()
        .parse::<i32>()
    {
        // SAFETY: kill(2) on a pid; no memory is touched.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

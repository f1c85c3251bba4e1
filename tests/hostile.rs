//! Hostile input, hostile providers, careless operators: secrets that a provider echoes back,
//! redirects, huge replies, rules files that are bombs or mistakes, a second daemon, a closed
//! pipe, a notify socket nobody reads. Each runs the real binary.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SH_KEY: &str = "sh-secret-key-123";
const TOKEN: &str = "sk_live_testtoken";

fn running(fake: &Fake) -> (Site, Daemon) {
    Site::running(fake, "200ms")
}

/// Every byte a user could read: the log, `status` (text), and the state directory's files.
fn everything_visible(site: &Site, d: &Daemon) -> String {
    let mut all = d.log();
    let (_, out, err) = site.run(&["status"]);
    all.push_str(&out);
    all.push_str(&err);
    for entry in std::fs::read_dir(&site.state).unwrap().flatten() {
        all.push_str(&String::from_utf8_lossy(
            &std::fs::read(entry.path()).unwrap_or_default(),
        ));
    }
    all
}

#[test]
fn a_provider_that_echoes_the_secret_never_gets_it_into_logs_status_or_state() {
    let fake = Fake::start();
    let encoded = "sh%2Dsecret%2Dkey%2D123";
    fake.script(
        Route::VimsPurge,
        vec![Reply::json(
            403,
            serde_json::json!({"status": "error", "message": format!("token {TOKEN} is over quota")}),
        )],
    );
    fake.script(
        Route::SiteHostPurge,
        vec![Reply::json(
            401,
            serde_json::json!({"status": false, "msg": format!("apikey {SH_KEY} invalid (you sent apikey={encoded})")}),
        )],
    );
    let (site, d) = running(&fake);
    site.write("index.html", "home v2");
    d.wait_for_lines("purge failed for good", 2);
    let all = everything_visible(&site, &d);
    assert!(all.contains("over quota") && all.contains("[redacted]"), "{all}");
    for secret in [SH_KEY, TOKEN, encoded] {
        assert!(!all.contains(secret), "{secret} leaked:\n{all}");
    }
    // The same through `purge` on the command line.
    fake.script(
        Route::VimsPurge,
        vec![Reply::json(
            400,
            serde_json::json!({"status": "error", "message": format!("failed creation for {TOKEN}")}),
        )],
    );
    let (code, out, err) = site.run(&["purge", "cdn", "--all"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("[redacted]") && !err.contains(TOKEN), "{err}");
}

#[test]
fn a_redirect_is_an_error_that_names_its_location_and_is_never_followed() {
    let fake = Fake::start();
    let elsewhere = Fake::start();
    let to = format!("{}/cloud/stack/purge_cache.json", elsewhere.sitehost_url());
    fake.script(
        Route::SiteHostPurge,
        vec![Reply::json(307, serde_json::json!({})).header("location", &to)],
    );
    fake.script(
        Route::VimsPurge,
        vec![Reply::json(302, serde_json::json!({})).header("location", "https://elsewhere.example/login")],
    );
    let site = Site::new();
    site.write("index.html", "home");
    site.write_rules(&site.rules_for(&fake, "200ms", ""));
    let (code, _out, err) = site.run(&["purge", "www", "--all"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("HTTP 307") && err.contains(&to), "{err}");
    let (code, _out, err) = site.run(&["purge", "cdn", "--all"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("HTTP 302") && err.contains("https://elsewhere.example/login"),
        "{err}"
    );
    // One attempt each (a redirect is permanent), and nothing reached the other host.
    assert_eq!(fake.sitehost_purges().len(), 1);
    assert_eq!(fake.vims_purges().len(), 1);
    assert!(elsewhere.requests().is_empty(), "{:?}", elsewhere.requests());
}

#[test]
fn a_huge_reply_is_not_read_whole() {
    let fake = Fake::start();
    let big = format!("{{\"status\": \"ok\", \"pad\": \"{}\"}}", "x".repeat(3 * 1024 * 1024));
    fake.script(
        Route::VimsPurge,
        vec![Reply {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: big,
        }],
    );
    let site = Site::new();
    site.write_rules(
        &site
            .rules_for(&fake, "200ms", "")
            .replace("retry_backoff_max: 1s", "retry_attempts: 1"),
    );
    let (code, _out, err) = site.run(&["purge", "cdn", "--all"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("larger than 1024 KiB"), "{err}");
}

#[test]
fn the_state_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let fake = Fake::start();
    let (site, mut d) = running(&fake);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&site.state), 0o700);
    assert_eq!(mode(&site.state.join("state.sqlite3")), 0o600);
    d.signal("TERM");
    assert_eq!(d.wait_exit(), 0);
}

#[test]
fn a_second_daemon_on_the_same_state_directory_exits_1_naming_it_and_the_holder() {
    let fake = Fake::start();
    let (site, d) = running(&fake);
    let mut second = site.start(&["run"]);
    assert_eq!(second.wait_exit(), 1, "{}", second.log());
    let log = second.log();
    assert!(
        log.contains(&site.state.display().to_string()) && log.contains(&format!("pid {}", d.child.id())),
        "{log}"
    );
    // The commands that only read or send still work beside the daemon.
    assert_eq!(site.run(&["status"]).0, 0);
    assert_eq!(site.run(&["plan"]).0, 0);
    // And the first daemon still purges, once.
    site.write("index.html", "home v2");
    wait_requests(&fake, Route::SiteHostPurge, 1, &d);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(fake.sitehost_purges().len(), 1);
}

/// `check` on `rules` (written into a fresh site): its exit status and stderr.
fn check(site: &Site, rules: &str) -> (i32, String) {
    site.write_rules(rules);
    let (code, _out, err) = site.run(&["check"]);
    (code, err)
}

fn line_of(rules: &str, needle: &str) -> usize {
    rules.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn bad_api_urls_and_ids_are_refused_at_load_with_positions() {
    let fake = Fake::start();
    let site = Site::new();
    let good = site.rules_for(&fake, "2s", "");
    for bad in [
        "http//missing-colon",
        "ftp://api.example.com/1.3",
        "not a url",
        "http://[::1]:99999/1.3",
        "\"\"",
        "https://user:hunter2@api.example.com/1.3",
    ] {
        let rules = good.replace(&fake.sitehost_url(), bad);
        let (code, err) = check(&site, &rules);
        assert_eq!(code, 2, "{bad}: {err}");
        let at = format!("rules.yaml:{}:14: target \"www\": api_url", line_of(&rules, "api_url"));
        assert!(err.contains(&at), "{bad}: want {at:?} in {err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
    for (key, bad) in [
        ("cdn_id: 7", "cdn_id: seven"),
        ("cdn_id: 7", "cdn_id: -7"),
        ("cdn_id: 7", "cdn_id: 7.5"),
        ("client_id: 12345", "client_id: 12345678901234567890123"),
        ("host: all", "host: everything"),
    ] {
        let rules = good.replace(key, bad);
        let (code, err) = check(&site, &rules);
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(
            err.contains(&format!("rules.yaml:{}:", line_of(&rules, bad))),
            "{bad}: {err}"
        );
        assert!(err.contains("not a whole number"), "{err}");
    }
    // `run` does not start on them either.
    let rules = good.replace(&fake.sitehost_url(), "http//missing-colon");
    site.write_rules(&rules);
    let mut d = site.start(&["run"]);
    assert_eq!(d.wait_exit(), 2, "{}", d.log());
}

#[test]
fn a_state_dir_inside_a_watched_tree_and_system_trees_are_refused() {
    let fake = Fake::start();
    let site = Site::new();
    let good = site.rules_for(&fake, "2s", "");
    let state_line = good.lines().next().unwrap().to_string();
    let inside = good.replace(&state_line, &format!("state_dir: {}/.purgewatch", site.root.display()));
    let (code, err) = check(&site, &inside);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("rules.yaml:1:12: rule \"site\" watches"), "{err}");
    // `watch: ""` is the rules file's own directory, which holds the state directory.
    let empty = good.replace("watch: public", "watch: \"\"");
    let (code, err) = check(&site, &empty);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("holds the state directory"), "{err}");
    for root in ["/", "/proc", "/sys", "/dev", "/proc/self", "/sys/kernel", "/dev/pts"] {
        if !Path::new(root).is_dir() {
            continue;
        }
        let rules = good.replace("watch: public", &format!("watch: {root}"));
        let (code, err) = check(&site, &rules);
        assert_eq!(code, 2, "{root}: {err}");
        let at = format!("rules.yaml:{}:12:", line_of(&rules, "watch:"));
        assert!(err.contains(&at), "{root}: want {at} in {err}");
    }
}

#[test]
fn bombs_and_wrong_files_end_quickly_with_an_error() {
    let site = Site::new();
    let mut bomb =
        String::from("a: &a [\"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\"]\n");
    for i in 1..9u8 {
        let (prev, cur) = ((b'a' + i - 1) as char, (b'a' + i) as char);
        bomb.push_str(&format!("{cur}: &{cur} [{}]\n", vec![format!("*{prev}"); 9].join(", ")));
    }
    assert!(bomb.len() < 1000);
    let started = Instant::now();
    let (code, err) = check(&site, &bomb);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("alias bomb") && err.contains("rules.yaml:"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());

    let out = Command::new(bin()).args(["check", "-c", "/dev/zero"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("larger than 1024 KiB"));

    let fake = Fake::start();
    let mut bytes = site.rules_for(&fake, "2s", "").into_bytes();
    let at = bytes.windows(6).position(|w| w == b"mystac").unwrap();
    bytes[at + 2] = 0xff;
    std::fs::write(&site.rules, &bytes).unwrap();
    let (code, _out, err) = site.run(&["check"]);
    assert_eq!(code, 2, "{err}");
    let line = bytes[..at].iter().filter(|b| **b == b'\n').count() + 1;
    assert!(
        err.contains(&format!("rules.yaml:{line}:14: the rules file is not valid UTF-8")),
        "{err}"
    );
}

/// Runs a command whose standard output is a pipe closed before it writes.
fn with_closed_stdout(site: &Site, args: &[&str]) -> (i32, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(bin())
        .args(args)
        .arg("-c")
        .arg(&site.rules)
        .env("PW_TEST_SITEHOST_KEY", SH_KEY)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_pipe_ends_quietly_and_a_full_disk_is_one_error_line() {
    let fake = Fake::start();
    let (site, mut d) = running(&fake);
    d.signal("TERM");
    assert_eq!(d.wait_exit(), 0);
    for i in 0..200 {
        site.write(&format!("p/{i}.html"), "new");
    }
    for args in [
        &["plan"][..],
        &["status"],
        &["check"],
        &["purge", "cdn", "--all", "--dry-run"],
    ] {
        let (code, err) = with_closed_stdout(&site, args);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}: {err}"
        );
    }
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full");
    if let Ok(full) = full {
        let out = Command::new(bin())
            .args(["plan", "-c"])
            .arg(&site.rules)
            .env("PW_TEST_SITEHOST_KEY", SH_KEY)
            .stdout(full)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(!err.contains("panicked") && err.trim().lines().count() == 1, "{err}");
        assert!(err.contains("cannot write to standard output"), "{err}");
    }
}

#[test]
fn a_notify_socket_nobody_reads_never_stops_the_daemon() {
    use std::os::unix::net::UnixDatagram;
    let fake = Fake::start();
    let site = Site::new();
    site.write("index.html", "home");
    site.write_rules(&site.rules_for(&fake, "50ms", ""));
    let sock_path = site.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    // A watchdog ping every 5 ms fills the socket's queue at once.
    let d = site.start_with(
        &["run"],
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "10000"),
        ],
    );
    let mut buf = [0u8; 4096];
    let end = Instant::now() + DEADLINE;
    while Instant::now() < end {
        if let Ok(n) = sock.recv(&mut buf)
            && String::from_utf8_lossy(&buf[..n]).contains("READY=1")
        {
            break;
        }
    }
    d.wait_ready();
    // From here on nobody reads the socket.
    for i in 1..=30 {
        site.write("index.html", &format!("home v{i}"));
        wait_requests(&fake, Route::SiteHostPurge, i, &d);
    }
    drop(sock);
}

#[test]
fn a_directory_symlink_out_of_the_tree_is_not_followed_unless_asked() {
    let fake = Fake::start();
    let site = Site::new();
    site.write("index.html", "home");
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("gshadow"), "root:secret").unwrap();
    std::os::unix::fs::symlink(outside.path(), site.root.join("etc")).unwrap();
    site.write_rules(&site.rules_for(&fake, "200ms", ""));
    let d = site.start(&["run"]);
    d.wait_ready();
    let warned = d.lines_containing("outside the watched tree");
    assert_eq!(warned.len(), 1, "{}", d.log());
    assert!(
        warned[0].contains("etc") && warned[0].contains("follow_symlinks"),
        "{}",
        warned[0]
    );
    let (_, out, _) = site.run(&["plan"]);
    assert!(!out.contains("gshadow"), "{out}");
    // A change there is no change of the site; a change of the site still is.
    std::fs::write(outside.path().join("gshadow"), "root:changed").unwrap();
    site.write("index.html", "home v2");
    let vims = wait_requests(&fake, Route::VimsPurge, 1, &d);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(fake.vims_purges().len(), 1);
    assert!(
        !pattern_matches(&vims[0].pattern(), "/etc/gshadow"),
        "{}",
        vims[0].pattern()
    );
    // A link made while the daemon runs is not walked either.
    std::os::unix::fs::symlink(outside.path(), site.root.join("etc2")).unwrap();
    site.write("index.html", "home v3");
    wait_requests(&fake, Route::VimsPurge, 2, &d);
    std::thread::sleep(Duration::from_millis(800));
    for r in fake.vims_purges() {
        assert!(!pattern_matches(&r.pattern(), "/etc2/gshadow"), "{}", r.pattern());
    }
    let state = std::fs::read(site.state.join("state.sqlite3")).unwrap();
    assert!(!String::from_utf8_lossy(&state).contains("gshadow"));
    assert_plan_empty(&site);

    // Asked for: the link is followed, and its files are part of the site.
    site.write_rules(&site.rules_for(&fake, "200ms", "    follow_symlinks: true\n"));
    let (code, out, err) = site.run(&["plan"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("purge  etc/gshadow  (created)"), "{out}");
}

/// A directory symlink inside the tree (`docs/current -> v2`) serves every file of `v2` at a
/// second URL: a change there is purged at both, whichever spelling the kernel reported it
/// under; a link into its own ancestor (`docs/self -> .`) doubles nothing.
#[test]
fn a_directory_symlink_inside_the_tree_purges_both_urls() {
    let fake = Fake::start();
    let site = Site::new();
    site.write("index.html", "home");
    site.write("docs/v1/x.html", "x1");
    site.write("docs/v2/x.html", "x2");
    std::os::unix::fs::symlink("v2", site.root.join("docs/current")).unwrap();
    std::os::unix::fs::symlink(".", site.root.join("docs/self")).unwrap();
    site.write_rules(&site.rules_for(&fake, "200ms", ""));
    let mut d = site.start(&["run"]);
    d.wait_ready();
    // index, v1, v2 and the link's copy of v2: the loop is not walked.
    let baseline = d.lines_containing("took the current tree as the baseline");
    assert!(baseline.iter().any(|l| l.contains("files=4")), "{}", d.log());
    let covered = |url: &str| fake.vims_purges().iter().any(|r| pattern_matches(&r.pattern(), url));

    site.write("docs/v2/x.html", "x2 edited");
    if !wait_until(DEADLINE, || {
        covered("/docs/v2/x.html") && covered("/docs/current/x.html")
    }) {
        panic!("{:?}\n{}", fake.vims_purges(), d.log());
    }
    // Written through the link: both spellings again, and a new file at both.
    site.write("docs/current/y.html", "y");
    if !wait_until(DEADLINE, || {
        covered("/docs/v2/y.html") && covered("/docs/current/y.html")
    }) {
        panic!("{:?}\n{}", fake.vims_purges(), d.log());
    }
    for r in fake.vims_purges() {
        let p = r.pattern();
        assert!(p != "*" && !pattern_matches(&p, "/docs/v1/x.html"), "{p}");
        assert!(!pattern_matches(&p, "/docs/self/v2/x.html"), "{p}");
    }
    assert_plan_empty(&site);
    // Re-pointed: the link's URLs are purged, and from then on v1's changes reach them.
    std::fs::remove_file(site.root.join("docs/current")).unwrap();
    std::os::unix::fs::symlink("v1", site.root.join("docs/current")).unwrap();
    let before = fake.vims_purges().len();
    wait_requests(&fake, Route::VimsPurge, before + 1, &d);
    assert_plan_empty(&site);
    site.write("docs/v1/x.html", "x1 edited");
    let at = fake.vims_purges().len();
    if !wait_until(DEADLINE, || {
        fake.vims_purges()[at..]
            .iter()
            .any(|r| pattern_matches(&r.pattern(), "/docs/current/x.html"))
    }) {
        panic!("{:?}\n{}", fake.vims_purges(), d.log());
    }
    assert_plan_empty(&site);
    d.signal("TERM");
    assert_eq!(d.wait_exit(), 0);
}

/// A tmpfs is a real filesystem: a site under /dev/shm is checked, watched and purged like any
/// other (the pseudo-filesystems are refused by their type, not by a path prefix).
#[test]
fn a_site_on_tmpfs_is_watched_like_any_other() {
    if !Path::new("/dev/shm").is_dir() {
        return;
    }
    let fake = Fake::start();
    let site = Site::new();
    let shm = tempfile::Builder::new()
        .prefix("purgewatch-site")
        .tempdir_in("/dev/shm")
        .unwrap();
    std::fs::write(shm.path().join("index.html"), "home").unwrap();
    let rules = site
        .rules_for(&fake, "200ms", "")
        .replace("watch: public", &format!("watch: {}", shm.path().display()));
    let (code, err) = check(&site, &rules);
    assert_eq!(code, 0, "{err}");
    let d = site.start(&["run"]);
    d.wait_ready();
    std::fs::write(shm.path().join("index.html"), "home v2").unwrap();
    let vims = wait_requests(&fake, Route::VimsPurge, 1, &d);
    assert!(
        pattern_matches(&vims[0].pattern(), "/index.html"),
        "{}",
        vims[0].pattern()
    );
}

/// A reply that quotes *another* target's secret (a VIMS error quoting the SiteHost key) is
/// scrubbed of it too, in the daemon's log, `purge` and `check --remote`: one mask for all.
#[test]
fn a_reply_quoting_another_targets_secret_is_scrubbed_everywhere() {
    let fake = Fake::start();
    let quoting = || {
        vec![Reply::json(
            403,
            serde_json::json!({"status": "error", "message": format!("not the key {SH_KEY} of your other account")}),
        )]
    };
    fake.script(Route::VimsPurge, quoting());
    let (site, d) = running(&fake);
    site.write("index.html", "home v2");
    d.wait_for("purge failed for good");
    let all = everything_visible(&site, &d);
    assert!(
        all.contains("of your other account") && all.contains("[redacted]"),
        "{all}"
    );
    assert!(!all.contains(SH_KEY), "{SH_KEY} leaked:\n{all}");
    fake.script(Route::VimsPurge, quoting());
    let (code, out, err) = site.run(&["purge", "cdn", "--all"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("of your other account") && !format!("{out}{err}").contains(SH_KEY),
        "{out}{err}"
    );
    fake.script(Route::VimsList, quoting());
    let (code, out, err) = site.run(&["check", "--remote"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("of your other account") && !format!("{out}{err}").contains(SH_KEY),
        "{out}{err}"
    );
}

/// A task id that is not a plain id (`../../steal`) is never put into the task URL, which
/// carries the token: the task is not followed, and `--wait` says it could not confirm it.
#[test]
fn a_crafted_task_id_never_sends_the_token_elsewhere() {
    let fake = Fake::start();
    let site = Site::new();
    site.write("index.html", "home");
    site.write_rules(&site.rules_for(&fake, "2s", ""));
    fake.script(
        Route::VimsPurge,
        vec![Reply::json(
            200,
            serde_json::json!({"status": "ok", "task_id": "../../steal?x=1"}),
        )],
    );
    let (code, out, err) = site.run(&["purge", "cdn", "--all", "--wait"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("not a plain id"), "{err}");
    let paths: Vec<String> = fake
        .requests()
        .iter()
        .map(|r| format!("{}?{}", r.path, r.query))
        .collect();
    assert!(!paths.iter().any(|p| p.contains("steal")), "{paths:?}");
}

/// A newline in a file name cannot forge a line: `--dry-run`'s log, `plan` and the hook's
/// `PURGEWATCH_URLS` show it escaped.
#[test]
fn a_newline_in_a_file_name_forges_no_line() {
    let fake = Fake::start();
    fake.script(Route::VimsPurge, vec![Reply::vims_error(401, "invalid token")]);
    let site = Site::new();
    site.write("index.html", "home");
    let out = site.path("hook.urls");
    let rules = site.rules_for(&fake, "200ms", "").replace(
        "    host: all\n",
        &format!(
            "    host: all\n    on_failure: [/bin/sh, -c, 'printf %s \"$PURGEWATCH_URLS\" > {}']\n",
            out.display()
        ),
    );
    site.write_rules(&rules);
    let forged = "x\nFORGED /evil.html";
    // plan, before the daemon has a record: take a baseline first.
    let mut dry = site.start(&["run", "--dry-run"]);
    dry.wait_ready();
    site.write(forged, "new");
    dry.wait_for("would purge");
    dry.signal("TERM");
    dry.wait_exit();
    assert!(!dry.log().lines().any(|l| l.starts_with("FORGED")), "{}", dry.log());
    assert!(dry.log().contains("x\\nFORGED"), "{}", dry.log());
    std::fs::remove_file(site.root.join(forged)).unwrap();

    // A baseline, then the file while the daemon is stopped: `plan` lists it.
    let mut first = site.start(&["run"]);
    first.wait_ready();
    first.signal("TERM");
    first.wait_exit();
    site.write(forged, "new");
    let (_, plan, _) = site.run(&["plan"]);
    assert!(plan.contains("x\\nFORGED"), "{plan}");
    assert!(!plan.lines().any(|l| l.trim_start().starts_with("FORGED")), "{plan}");
    let d = site.start(&["run"]);
    d.wait_ready();
    assert!(
        wait_until(DEADLINE, || std::fs::read_to_string(&out)
            .is_ok_and(|s| s.contains("FORGED"))),
        "{}",
        d.log()
    );
    let urls = std::fs::read_to_string(&out).unwrap();
    assert!(!urls.lines().any(|l| l.starts_with("FORGED")), "{urls:?}");
    assert!(!d.log().lines().any(|l| l.starts_with("FORGED")), "{}", d.log());
}

//! Nothing is lost: a kill during the debounce, changes made while stopped, a forced rescan, a real
//! overflow of the kernel's inotify queue, and `status` while the daemon runs.

mod common;

use common::*;
use std::time::Duration;

fn site_with(fake: &Fake, debounce: &str) -> Site {
    let site = Site::new();
    site.write("index.html", "home");
    site.write("blog/post.html", "post v1");
    site.write("blog/old.html", "old");
    site.write_rules(&site.rules_for(fake, debounce, ""));
    site
}

fn debug_env() -> [(&'static str, &'static str); 1] {
    [("RUST_LOG", "info,purgewatch=debug")]
}

#[test]
fn sigkill_during_the_debounce_then_restart_purges_once() {
    let fake = Fake::start();
    let site = site_with(&fake, "3s");
    let mut d = site.start_with(&["run"], &debug_env());
    d.wait_ready();
    site.write("blog/post.html", "post v2");
    d.wait_for("change seen");
    // `status` sees it waiting while the daemon runs.
    assert!(
        wait_until(DEADLINE, || site
            .run(&["status"])
            .1
            .contains("waiting for the debounce")),
        "{}",
        site.run(&["status"]).1
    );
    d.kill9();
    assert!(fake.sitehost_purges().is_empty(), "killed before the debounce ended");

    let d2 = site.start(&["run"]);
    d2.wait_ready();
    let vims = wait_requests(&fake, Route::VimsPurge, 1, &d2);
    wait_requests(&fake, Route::SiteHostPurge, 1, &d2);
    assert!(
        pattern_matches(&vims[0].pattern(), "/blog/post.html"),
        "{}",
        vims[0].pattern()
    );
    assert!(!pattern_matches(&vims[0].pattern(), "/blog/old.html"));
    // Once: nothing more after the purge went out.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(fake.vims_purges().len(), 1, "{}", d2.log());
    assert_eq!(fake.sitehost_purges().len(), 1, "{}", d2.log());
    // And `status` shows the last purge.
    let (code, out, err) = site.run(&["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("target \"cdn\" (vims)") && out.contains("accepted"),
        "{out}"
    );
}

#[test]
fn sigkill_after_the_changes_were_queued_replays_them_once() {
    let fake = Fake::start();
    let site = site_with(&fake, "300ms");
    // The provider is down: the purge is queued in the state directory and retried.
    fake.script(
        Route::VimsPurge,
        (0..50)
            .map(|_| Reply::json(503, serde_json::json!({"status": "error"})))
            .collect(),
    );
    let mut d = site.start(&["run"]);
    d.wait_ready();
    site.write("blog/post.html", "post v2");
    wait_requests(&fake, Route::VimsPurge, 2, &d);
    d.kill9();
    let before = fake.vims_purges().len();
    let (_, out, _) = site.run(&["status"]);
    assert!(out.contains("pending: 1 file"), "{out}");

    let fake2 = Fake::start();
    site.write_rules(&site.rules_for(&fake2, "300ms", ""));
    let d2 = site.start(&["run"]);
    d2.wait_ready();
    let vims = wait_requests(&fake2, Route::VimsPurge, 1, &d2);
    assert!(pattern_matches(&vims[0].pattern(), "/blog/post.html"));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(fake2.vims_purges().len(), 1, "{}", d2.log());
    assert_eq!(fake.vims_purges().len(), before, "the old provider is not called again");
}

#[test]
fn changes_made_while_stopped_are_purged_at_start() {
    let fake = Fake::start();
    let site = site_with(&fake, "300ms");
    let mut d = site.start(&["run"]);
    d.wait_ready();
    d.signal("TERM");
    assert_eq!(d.wait_exit(), 0);
    assert!(fake.requests().is_empty(), "first start purges nothing");

    site.write("blog/post.html", "edited while stopped");
    site.write("new.html", "new");
    std::fs::remove_file(site.root.join("blog/old.html")).unwrap();
    let d2 = site.start(&["run"]);
    d2.wait_ready();
    let vims = wait_requests(&fake, Route::VimsPurge, 1, &d2);
    let p = vims[0].pattern();
    for url in ["/blog/post.html", "/new.html", "/blog/old.html"] {
        assert!(pattern_matches(&p, url), "{url} not in {p}");
    }
    assert!(!pattern_matches(&p, "/index.html"), "{p}");
    wait_requests(&fake, Route::SiteHostPurge, 1, &d2);
}

#[test]
fn a_forced_rescan_finds_changes_no_event_reported() {
    let fake = Fake::start();
    let site = site_with(&fake, "300ms");
    // A hard link outside the watched tree: writes through it change the watched file's bytes
    // without any inotify event on the watched directory, as when the kernel queue overflows.
    let outside = site.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::hard_link(site.root.join("blog/post.html"), outside.join("post.html")).unwrap();
    let d = site.start(&["run"]);
    d.wait_ready();
    std::fs::write(outside.join("post.html"), "changed behind inotify's back").unwrap();
    d.signal("USR1");
    let vims = wait_requests(&fake, Route::VimsPurge, 1, &d);
    assert!(
        pattern_matches(&vims[0].pattern(), "/blog/post.html"),
        "{}",
        vims[0].pattern()
    );
    assert!(!pattern_matches(&vims[0].pattern(), "/index.html"));
}

#[test]
fn a_kernel_queue_overflow_is_rescanned_and_nothing_is_lost() {
    let fake = Fake::start();
    let site = site_with(&fake, "300ms");
    let d = site.start(&["run"]);
    d.wait_ready();
    // Frozen, the daemon reads nothing: the kernel's inotify queue fills up to
    // fs.inotify.max_queued_events and then drops events, queueing IN_Q_OVERFLOW instead.
    d.signal("STOP");
    let max: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Writes alternate between two files: the kernel merges an event only into an identical
    // one just before it, so each write is one more event.
    use std::io::Write;
    let mut a = std::fs::File::create(site.root.join("a.html")).unwrap();
    let mut b = std::fs::File::create(site.root.join("b.html")).unwrap();
    for _ in 0..max / 2 + 1000 {
        a.write_all(b"a").unwrap();
        b.write_all(b"b").unwrap();
    }
    drop((a, b));
    // This change happens after the queue is full: no event of it reaches the daemon.
    site.write("blog/post.html", "post v2, written after the overflow");
    d.signal("CONT");
    d.wait_for("the kernel event queue overflowed");
    let purged = wait_requests(&fake, Route::VimsPurge, 1, &d);
    let all_purged = |url: &str| fake.vims_purges().iter().any(|r| pattern_matches(&r.pattern(), url));
    assert!(
        wait_until(DEADLINE, || ["/blog/post.html", "/a.html", "/b.html"]
            .iter()
            .all(|u| all_purged(u))),
        "{:?}\n{}",
        purged.iter().map(|r| r.pattern()).collect::<Vec<_>>(),
        d.log()
    );
    assert!(!all_purged("/index.html"), "unchanged and purged");
    wait_requests(&fake, Route::SiteHostPurge, 1, &d);
}

#[test]
fn a_state_file_from_a_newer_version_is_a_clear_error() {
    let fake = Fake::start();
    let site = site_with(&fake, "300ms");
    std::fs::create_dir_all(&site.state).unwrap();
    let db = site.state.join("state.sqlite3");
    std::fs::write(
        &db,
        "garbage that is not sqlite at all, and long enough to be read as a header",
    )
    .unwrap();
    let mut d = site.start(&["run"]);
    assert_eq!(d.wait_exit(), 1, "{}", d.log());
    assert!(
        d.log().contains("not a purgewatch state file or is damaged"),
        "{}",
        d.log()
    );
    assert!(
        std::fs::read_to_string(&db).unwrap().starts_with("garbage"),
        "never wiped"
    );
}

#[test]
fn a_state_directory_that_cannot_be_created_is_one_clear_error() {
    let fake = Fake::start();
    let site = site_with(&fake, "300ms");
    // A plain file where the state directory should be.
    std::fs::write(&site.state, "not a directory").unwrap();
    let mut d = site.start(&["run"]);
    assert_eq!(d.wait_exit(), 1, "{}", d.log());
    let log = d.log();
    let want = format!("state directory {}: cannot create it: ", site.state.display());
    assert!(log.contains(&want), "{log}");
    assert!(log.contains("set `state_dir:`"), "{log}");
    // What the OS said, once.
    assert_eq!(log.matches("(os error").count(), 1, "{log}");
}

#[test]
fn metadata_of_identical_rewrites_is_recorded_while_the_daemon_runs() {
    // Identical bytes with a new mtime send nothing, but the new metadata is written to the
    // state directory a little later (in chunks of 5,000 rows), so that the next start need not
    // hash those files again: `plan`, reading the state beside the daemon, stops listing them.
    let fake = Fake::start();
    let site = Site::new();
    let n = 6_000;
    let path = |i: usize| format!("p{}/f{i:04}.html", i / 500);
    for i in 0..n {
        site.write(&path(i), &format!("page {i}"));
    }
    site.write_rules(&site.rules_for(&fake, "300ms", ""));
    let d = site.start(&["run"]);
    d.wait_ready();
    // The same bytes again, with an mtime long past (outside the window in which size and mtime
    // are not trusted).
    let old = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    for i in 0..n {
        site.write(&path(i), &format!("page {i}"));
        let f = std::fs::File::options()
            .write(true)
            .open(site.root.join(path(i)))
            .unwrap();
        f.set_modified(old).unwrap();
    }
    let identical = |out: &str| out.lines().filter(|l| l.contains("identical content")).count();
    let mut last = String::new();
    let recorded = wait_until(DEADLINE, || {
        let (code, out, err) = site.run(&["plan"]);
        assert_eq!(code, 0, "{err}");
        last = out;
        identical(&last) == 0
    });
    assert!(
        recorded,
        "still hashed by plan: {} files\n{}",
        identical(&last),
        d.log()
    );
    assert!(fake.vims_purges().is_empty(), "{:?}", fake.vims_purges());
}

#[test]
fn a_state_file_deleted_while_running_is_noticed_and_written_anew() {
    let fake = Fake::start();
    let site = site_with(&fake, "200ms");
    let d = site.start(&["run"]);
    d.wait_ready();
    for entry in std::fs::read_dir(&site.state).unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with("state.sqlite3") {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }
    site.write("index.html", "home v2");
    wait_requests(&fake, Route::VimsPurge, 1, &d);
    d.wait_for("was deleted or replaced while purgewatch runs");
    d.wait_for("wrote a new state file");
    assert!(site.state.join("state.sqlite3").exists());
    // The new file holds the daemon's record: nothing to purge, and a restart sends nothing.
    assert_plan_empty(&site);
    restart_sends_nothing(&site, &fake, d);
}

/// A small tmpfs mounted at `dir` for the test's life (the tests run as root, as CI does).
struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(dir: &std::path::Path, size: &str) -> Mount {
        std::fs::create_dir_all(dir).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount -t tmpfs failed: this test needs root, as CI has");
        Mount(dir.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_at_start_says_so_and_is_never_called_damage() {
    let fake = Fake::start();
    let site = site_with(&fake, "200ms");
    let _mount = Mount::tmpfs(&site.state, "1m");
    let mut d = site.start(&["run"]);
    d.wait_ready();
    d.signal("TERM");
    assert_eq!(d.wait_exit(), 0);
    // Fill the disk to the last byte.
    let mut filler = std::fs::File::create(site.state.join("filler")).unwrap();
    let block = vec![0u8; 4096];
    while std::io::Write::write_all(&mut filler, &block).is_ok() {}
    drop(filler);
    let mut d = site.start(&["run"]);
    let code = d.wait_exit();
    let log = d.log();
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains("disk is full") && !log.contains("damaged") && !log.contains("move it away to start over"),
        "{log}"
    );
}

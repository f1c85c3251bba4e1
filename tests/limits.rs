//! The kernel's inotify limits too low for the rules, for real: the daemon runs in a user
//! namespace of its own (`unshare -U -r`) whose `user.max_inotify_watches` or
//! `user.max_inotify_instances` the test lowers, so nothing else on the machine is limited.
//! `check` and the start say which limit, the numbers and the sysctl lines; the daemon keeps
//! purging by rescanning; `/healthz` and `status` show it.

mod common;

use common::*;
use std::path::Path;

/// `purgewatch ARGS -c rules` in a user namespace whose `user.max_inotify_NAME` is `value`.
fn limited(site: &Site, name: &str, value: u64, args: &[&str]) -> std::process::Command {
    let script = format!("echo {value} > /proc/sys/user/max_inotify_{name} && exec \"$0\" \"$@\"");
    let mut full = vec!["-U", "-r", "sh", "-c", &script, bin()];
    full.extend_from_slice(args);
    site.command(Path::new("unshare"), &full)
}

fn site_with_dirs(fake: &Fake, dirs: usize) -> Site {
    let site = Site::new();
    site.write("index.html", "home");
    for i in 0..dirs {
        site.write(&format!("d{i}/index.html"), "x");
    }
    let rules = site
        .rules_for(fake, "200ms", "")
        .replace("defaults:", "metrics_listen: 127.0.0.1:0\ndefaults:");
    site.write_rules(&rules);
    site
}

#[test]
fn too_few_watches_are_named_at_check_and_start_and_the_tree_is_still_purged() {
    let fake = Fake::start();
    let site = site_with_dirs(&fake, 60);
    let out = limited(&site, "watches", 40, &["check"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "a warning, not an error: {err}");
    assert!(
        err.contains("fs.inotify.max_user_watches is 40, the rules need"),
        "{err}"
    );
    assert!(err.contains("sysctl -w fs.inotify.max_user_watches=1048576"), "{err}");
    assert!(err.contains("/etc/sysctl.d/60-purgewatch.conf"), "{err}");

    let d = Daemon::spawn(limited(&site, "watches", 40, &["run"]));
    d.wait_ready();
    d.wait_for("fs.inotify.max_user_watches is 40");
    let addr = d.metrics_addr();
    let (code, body) = http_get(&addr, "/healthz");
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("inotify watch limit") && body.contains("max_user_watches is 40"),
        "{body}"
    );
    let (_, status, _) = site.run(&["status"]);
    assert!(
        status.contains("warning: the kernel's inotify limits are too low"),
        "{status}"
    );
    assert!(status.contains("sysctl -w fs.inotify.max_user_watches="), "{status}");
    // A directory the watches did not reach: purged by the rescan.
    site.write("d59/index.html", "x2");
    let covered = || {
        fake.vims_purges()
            .iter()
            .any(|r| pattern_matches(&r.pattern(), "/d59/index.html"))
    };
    assert!(wait_until(DEADLINE, covered), "{}", d.log());
}

#[test]
fn no_inotify_instance_at_all_still_purges_by_rescanning() {
    let fake = Fake::start();
    let site = site_with_dirs(&fake, 2);
    let d = Daemon::spawn(limited(&site, "instances", 0, &["run"]));
    d.wait_ready();
    d.wait_for("fs.inotify.max_user_instances is 0");
    let addr = d.metrics_addr();
    let (code, body) = http_get(&addr, "/healthz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("no inotify instance"), "{body}");
    site.write("d1/index.html", "x2");
    let covered = || {
        fake.vims_purges()
            .iter()
            .any(|r| pattern_matches(&r.pattern(), "/d1/index.html"))
    };
    assert!(wait_until(DEADLINE, covered), "{}", d.log());
}

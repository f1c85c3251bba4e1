//! Big files keep the daemon's promises: one being read never holds a purge back past
//! `max_delay`, nor a stop past `shutdown_timeout`. The big file here is sparse (a terabyte of
//! holes, made in a moment): reading it whole would take many minutes, so a test that waited for
//! it would fail at its deadline.

mod common;

use common::*;
use std::time::{Duration, SystemTime};

const TIB: u64 = 1 << 40;

/// A sparse file of `len` bytes at `rel`, last modified an hour ago (so that nothing about it
/// is recent enough to need reading again).
fn sparse(site: &Site, rel: &str, len: u64) {
    let p = site.root.join(rel);
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(len).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(3600)).unwrap();
}

fn rules(site: &Site, fake: &Fake, max_delay: &str, shutdown_timeout: &str) -> String {
    site.rules_for(fake, "300ms", "")
        .replace("max_delay: 30s", &format!("max_delay: {max_delay}"))
        .replace("defaults:", &format!("shutdown_timeout: {shutdown_timeout}\ndefaults:"))
}

fn covered(fake: &Fake, url: &str) -> bool {
    fake.vims_purges().iter().any(|r| pattern_matches(&r.pattern(), url))
}

#[test]
fn a_big_file_being_read_does_not_hold_back_a_purge_past_max_delay() {
    let fake = Fake::start();
    let site = Site::new();
    site.write("index.html", "home");
    site.write_rules(&rules(&site, &fake, "2s", "10s"));
    let mut d = site.start_with(&["run"], &[("RUST_LOG", "info,purgewatch=debug")]);
    d.wait_ready();
    sparse(&site, "big.bin", TIB);
    site.write("index.html", "home v2");
    // Both go out by max_delay (and a little): the edit read, the big file by its metadata.
    if !wait_until(DEADLINE, || covered(&fake, "/index.html") && covered(&fake, "/big.bin")) {
        panic!("not purged: {:?}\n{}", fake.vims_purges(), d.log());
    }
    d.wait_for("purged by size and mtime");
    assert_eq!(fake.sitehost_purges().len(), 1, "{}", d.log());
    // The record says what the disk says: the big file is not purged again, by a batch or
    // by `plan`.
    assert_plan_empty(&site);
    // A stop is not held up by the hashing thread still reading the big file ahead.
    d.signal("TERM");
    assert_eq!(d.wait_exit(), 0, "{}", d.log());
    let before = fake.requests().len();
    let d = site.start(&["run"]);
    d.wait_ready();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(fake.requests().len(), before, "the restart purged again\n{}", d.log());
}

#[test]
fn a_stop_during_the_reading_of_a_big_file_keeps_to_shutdown_timeout() {
    let fake = Fake::start();
    let site = Site::new();
    site.write("index.html", "home");
    // A max_delay far away: only the stop can end the reading.
    site.write_rules(&rules(&site, &fake, "10m", "4s"));
    let mut d = site.start_with(&["run"], &[("RUST_LOG", "info,purgewatch=debug")]);
    d.wait_ready();
    sparse(&site, "big.bin", TIB);
    site.write("index.html", "home v2");
    d.wait_for("comparing");
    let asked = std::time::Instant::now();
    d.signal("TERM");
    assert_eq!(d.wait_exit(), 0, "{}", d.log());
    let took = asked.elapsed();
    // What was found went out before the exit: the big file by its metadata.
    assert!(
        covered(&fake, "/index.html") && covered(&fake, "/big.bin"),
        "{:?}\n{}",
        fake.vims_purges(),
        d.log()
    );
    // Reading the file would take many minutes; the stop kept (generously) to its 4 s.
    assert!(took < Duration::from_secs(30), "stopped in {took:?}\n{}", d.log());
    assert_plan_empty(&site);
}

//! systemd notifications on a test NOTIFY_SOCKET: READY=1 once watches are in place,
//! RELOADING=1 then READY=1 around a reload, STOPPING=1 on SIGTERM, WATCHDOG=1 pings.

mod common;

use common::*;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

fn recv_until(sock: &UnixDatagram, needle: &str, got: &mut Vec<String>) -> bool {
    let end = std::time::Instant::now() + DEADLINE;
    let mut buf = [0u8; 4096];
    while std::time::Instant::now() < end {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            if got.last().unwrap().lines().any(|l| l == needle) {
                return true;
            }
        }
    }
    false
}

#[test]
fn ready_reloading_watchdog_and_stopping_are_sent() {
    let fake = Fake::start();
    let site = Site::new();
    site.write("index.html", "home");
    site.write_rules(&site.rules_for(&fake, "200ms", ""));
    let sock_path = site.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut d = site.start_with(
        &["run"],
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let mut got = Vec::new();
    assert!(
        recv_until(&sock, "READY=1", &mut got),
        "no READY=1: {got:?}\n{}",
        d.log()
    );
    d.wait_ready(); // the ready line comes with READY=1 (its reader thread may lag the socket)
    assert!(recv_until(&sock, "WATCHDOG=1", &mut got), "no WATCHDOG=1: {got:?}");

    d.signal("HUP");
    got.clear();
    assert!(
        recv_until(&sock, "READY=1", &mut got),
        "no READY=1 after reload: {got:?}"
    );
    let reloading = got.iter().position(|m| m.lines().any(|l| l == "RELOADING=1"));
    let ready = got.iter().position(|m| m.lines().any(|l| l == "READY=1"));
    assert!(
        reloading.is_some() && reloading < ready,
        "RELOADING=1 before READY=1: {got:?}"
    );
    assert!(got.iter().any(|m| m.contains("MONOTONIC_USEC=")), "{got:?}");

    d.signal("TERM");
    assert!(recv_until(&sock, "STOPPING=1", &mut got), "no STOPPING=1: {got:?}");
    assert_eq!(d.wait_exit(), 0);
}

/// While it starts (a first start hashes every file before READY), the daemon asks systemd for
/// more time and says what it is doing: EXTEND_TIMEOUT_USEC= with a STATUS=, before READY=1.
#[test]
fn start_up_asks_for_more_time_and_says_what_it_does() {
    let fake = Fake::start();
    let site = Site::new();
    for i in 0..200 {
        site.write(&format!("p{i}.html"), "page");
    }
    site.write_rules(&site.rules_for(&fake, "200ms", ""));
    let sock_path = site.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut d = site.start_with(&["run"], &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())]);
    let mut got = Vec::new();
    assert!(
        recv_until(&sock, "READY=1", &mut got),
        "no READY=1: {got:?}\n{}",
        d.log()
    );
    let ready = got.iter().position(|m| m.lines().any(|l| l == "READY=1")).unwrap();
    let extend = got
        .iter()
        .position(|m| m.contains("EXTEND_TIMEOUT_USEC=") && m.contains("STATUS=starting"));
    assert!(extend.is_some_and(|e| e < ready), "{got:?}");
    d.signal("TERM");
    assert_eq!(d.wait_exit(), 0);
}

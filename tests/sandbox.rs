//! The real binary under the system-call filter of each systemd unit the project ships
//! (`examples/purgewatch.service` and the packaged unit build.rs writes), applied as systemd
//! applies it, as an unprivileged user (as `DynamicUser=` runs it): `check` (the unit's
//! `ExecStartPre=` and `ExecReload=`), then `run` through start, a deploy purged at the fake
//! provider, a reload, a second deploy and SIGTERM.
//!
//! How systemd builds the filter (systemd.exec(5), "SystemCallFilter="), which this follows:
//! the lines are read in order; the first decides the mode (an allow list, unless it starts with
//! `~`: then a deny list) and, for an allow list, `@default` is allowed as well; each later line
//! adds its calls to the set (same polarity) or takes them out of it (the other); an empty
//! assignment starts over. Groups are expanded with `systemd-analyze syscall-filter`, nested
//! groups too; names this architecture lacks are passed over. A call the filter refuses kills
//! the process, unless `SystemCallErrorNumber=` names an errno to return instead. The filter is
//! loaded with libseccomp (as systemd loads it) and installed in the child just before `exec`,
//! after `PR_SET_NO_NEW_PRIVS`.

mod common;

use common::*;
use std::collections::{BTreeSet, HashMap};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use libseccomp::{ScmpAction, ScmpFilterContext, ScmpSyscall};

/// The user `DynamicUser=` stands for, when the tests run as root: nobody.
const UNPRIVILEGED: u32 = 65534;

/// The units the project ships.
fn units() -> Vec<PathBuf> {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/purgewatch.service");
    // build.rs writes the packaged unit to target/<profile>/assets/, beside the binary.
    let packaged = Path::new(bin()).parent().unwrap().join("assets/purgewatch.service");
    assert!(packaged.exists(), "build.rs writes {}", packaged.display());
    vec![example, packaged]
}

/// Every group `systemd-analyze syscall-filter` knows, with its members (calls and groups).
fn groups() -> HashMap<String, Vec<String>> {
    let out = Command::new("systemd-analyze")
        .arg("syscall-filter")
        .output()
        .expect("systemd-analyze (from the systemd package; .ci/run installs it) lists the groups");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut groups: HashMap<String, Vec<String>> = HashMap::new();
    let mut current = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let item = line.trim();
        if item.is_empty() || item.starts_with('#') {
            continue;
        }
        if !line.starts_with(char::is_whitespace) {
            current = Some(item.to_string());
            groups.entry(item.to_string()).or_default();
        } else if let Some(group) = &current {
            groups.get_mut(group).unwrap().push(item.to_string());
        }
    }
    assert!(groups.contains_key("@system-service"), "{groups:?}");
    groups
}

fn expand(name: &str, groups: &HashMap<String, Vec<String>>, out: &mut BTreeSet<String>) {
    if name.starts_with('@') {
        let members = groups
            .get(name)
            .unwrap_or_else(|| panic!("systemd knows no group {name}"));
        for m in members {
            expand(m, groups, out);
        }
    } else {
        out.insert(name.to_string());
    }
}

/// The filter a unit's `SystemCallFilter=` and `SystemCallErrorNumber=` lines describe.
#[derive(Debug)]
struct Filter {
    allow_list: bool,
    calls: BTreeSet<String>,
    errno: Option<i32>,
}

fn filter_of(unit: &str, groups: &HashMap<String, Vec<String>>) -> Filter {
    let mut filter: Option<Filter> = None;
    let mut errno = None;
    for line in unit.lines().map(str::trim) {
        if let Some(value) = line.strip_prefix("SystemCallErrorNumber=") {
            errno = Some(match value.trim() {
                "EPERM" => libc::EPERM,
                "EACCES" => libc::EACCES,
                "ENOSYS" => libc::ENOSYS,
                other => panic!("the test knows no errno {other}"),
            });
        }
        let Some(value) = line.strip_prefix("SystemCallFilter=") else {
            continue;
        };
        let value = value.trim();
        if value.is_empty() {
            filter = None;
            continue;
        }
        let (deny, words) = match value.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, value),
        };
        let f = filter.get_or_insert_with(|| {
            let mut calls = BTreeSet::new();
            if !deny {
                expand("@default", groups, &mut calls);
            }
            Filter {
                allow_list: !deny,
                calls,
                errno: None,
            }
        });
        let mut named = BTreeSet::new();
        for word in words.split_whitespace() {
            expand(word, groups, &mut named);
        }
        if deny != f.allow_list {
            f.calls.extend(named);
        } else {
            f.calls.retain(|c| !named.contains(c));
        }
    }
    let mut filter = filter.expect("the unit has SystemCallFilter= lines");
    filter.errno = errno;
    filter
}

/// The filter as a BPF program for this machine's architecture (libseccomp, as systemd).
fn bpf(filter: &Filter) -> Vec<u8> {
    let refused = match filter.errno {
        Some(e) => ScmpAction::Errno(e),
        None => ScmpAction::KillProcess,
    };
    let (default, listed) = if filter.allow_list {
        (refused, ScmpAction::Allow)
    } else {
        (ScmpAction::Allow, refused)
    };
    let mut ctx = ScmpFilterContext::new(default).unwrap();
    let mut applied = 0;
    for name in &filter.calls {
        // Names of other architectures (`_time64`, `32` variants) are not on this one.
        let Ok(call) = ScmpSyscall::from_name(name) else {
            continue;
        };
        if ctx.add_rule(listed, call).is_ok() {
            applied += 1;
        }
    }
    assert!(applied > 100 || !filter.allow_list, "{applied} calls applied");
    let mut file = tempfile::tempfile().unwrap();
    ctx.export_bpf(&file).unwrap();
    use std::io::{Read, Seek};
    file.rewind().unwrap();
    let mut program = Vec::new();
    file.read_to_end(&mut program).unwrap();
    assert!(!program.is_empty() && program.len() % 8 == 0);
    program
}

/// `cmd` runs as the unprivileged user (when the tests run as root) under `program`.
fn sandboxed(cmd: &mut Command, program: Vec<u8>) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        cmd.uid(UNPRIVILEGED).gid(UNPRIVILEGED);
    }
    // SAFETY: the closure runs in the child between fork and exec and only makes two prctl
    // calls on memory the closure owns; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let prog = libc::sock_fprog {
                len: (program.len() / 8) as u16,
                filter: program.as_ptr() as *mut libc::sock_filter,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &prog as *const libc::sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Gives everything below `dir` to the unprivileged user, when the tests run as root.
fn hand_over(dir: &Path) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    for entry in walkdir(dir) {
        std::os::unix::fs::lchown(&entry, Some(UNPRIVILEGED), Some(UNPRIVILEGED)).unwrap();
    }
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if out[i].is_dir() && !out[i].is_symlink() {
            for e in std::fs::read_dir(&out[i]).unwrap() {
                out.push(e.unwrap().path());
            }
        }
        i += 1;
    }
    out
}

fn command(binary: &Path, site: &Site, args: &[&str], program: &[u8]) -> Command {
    let mut cmd = site.command(binary, args);
    sandboxed(&mut cmd, program.to_vec());
    cmd
}

fn killed_by(status: std::process::ExitStatus) -> String {
    match status.signal() {
        Some(libc::SIGSYS) => "killed by SIGSYS: a system call the unit's filter refuses".into(),
        Some(sig) => format!("killed by signal {sig}"),
        None => format!("exit {:?}", status.code()),
    }
}

fn under_unit(unit: &Path, groups: &HashMap<String, Vec<String>>) {
    let text = std::fs::read_to_string(unit).unwrap();
    let filter = filter_of(&text, groups);
    let program = bpf(&filter);

    let fake = Fake::start();
    let site = Site::new();
    site.write("index.html", "home");
    site.write("blog/post.html", "v1");
    site.write_rules(&site.rules_for(&fake, "200ms", ""));
    // The binary where the unprivileged user can run it whatever the checkout's permissions.
    let binary = site.path("purgewatch");
    std::fs::copy(bin(), &binary).unwrap();
    let sock_path = site.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    hand_over(site.dir.path());
    let context = format!("under {}", unit.display());

    // ExecStartPre= and ExecReload=: `purgewatch check`.
    let out = unless_busy(|| command(&binary, &site, &["check"], &program).output()).unwrap();
    assert!(
        out.status.success(),
        "check {context}: {}\n{}",
        killed_by(out.status),
        String::from_utf8_lossy(&out.stderr)
    );

    // ExecStart=: `purgewatch run`, Type=notify.
    let mut cmd = command(&binary, &site, &["run"], &program);
    cmd.env("NOTIFY_SOCKET", &sock_path);
    let mut d = Daemon::spawn(cmd);
    let mut buf = [0u8; 4096];
    let ready = wait_until(DEADLINE, || {
        if let Ok(Some(st)) = d.child.try_wait() {
            panic!("run {context}: {}\n{}", killed_by(st), d.log());
        }
        matches!(sock.recv(&mut buf), Ok(n) if String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "READY=1"))
    });
    assert!(ready, "no READY=1 {context}:\n{}", d.log());
    d.wait_ready();

    // A deploy, purged at the fake provider through both targets.
    site.write("blog/post.html", "v2");
    wait_requests(&fake, Route::SiteHostPurge, 1, &d);
    let vims = wait_requests(&fake, Route::VimsPurge, 1, &d);
    assert!(
        pattern_matches(&vims[0].pattern(), "/blog/post.html"),
        "{:?}",
        vims[0].pattern()
    );

    // A reload, then a second deploy still purged.
    d.signal("HUP");
    d.wait_for("reloaded");
    site.write("index.html", "home v2");
    wait_requests(&fake, Route::SiteHostPurge, 2, &d);

    d.signal("TERM");
    let code = d.wait_exit();
    let status = d.child.wait().unwrap();
    assert_eq!(code, 0, "SIGTERM {context}: {}\n{}", killed_by(status), d.log());
    assert!(!d.log().contains("panicked"), "{}", d.log());
    // It ran as the unprivileged user: its state directory is that user's.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&site.state).unwrap().uid(), UNPRIVILEGED);
    }
}

#[test]
fn the_daemon_runs_under_the_system_call_filter_of_every_unit_it_ships() {
    let groups = groups();
    for unit in units() {
        under_unit(&unit, &groups);
    }
}

#[test]
fn the_filter_is_read_as_systemd_reads_it() {
    let groups = groups();
    // An allow list, then a deny line: the deny takes calls out; @default comes with the list.
    let f = filter_of(
        "SystemCallFilter=@system-service\nSystemCallFilter=~@privileged @resources\n",
        &groups,
    );
    assert!(f.allow_list && f.errno.is_none());
    assert!(f.calls.contains("read") && f.calls.contains("execve"));
    assert!(!f.calls.contains("sched_setscheduler"), "@resources taken out");
    assert!(!f.calls.contains("setuid"), "@privileged (nested @setuid) taken out");
    // A later allow line puts a call back; an empty assignment starts over.
    let f = filter_of(
        "SystemCallFilter=@system-service\nSystemCallFilter=~@resources\nSystemCallFilter=nice\nSystemCallErrorNumber=EPERM\n",
        &groups,
    );
    assert!(f.calls.contains("nice") && !f.calls.contains("setpriority"));
    assert_eq!(f.errno, Some(libc::EPERM));
    let f = filter_of(
        "SystemCallFilter=@system-service\nSystemCallFilter=\nSystemCallFilter=~@mount\n",
        &groups,
    );
    assert!(!f.allow_list && f.calls.contains("mount") && !f.calls.contains("read"));
}

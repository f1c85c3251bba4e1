//! The kernel's inotify limits against what the rules need: one watch per directory of every
//! tree (and of each tree's parent), one inotify instance, and an event queue long enough for a
//! deploy that rewrites the largest tree at once.
//!
//! When a limit is too low, `check` and the daemon's start say so with the numbers and the
//! `sysctl` lines to set (the package ships `/etc/sysctl.d/60-purgewatch.conf`); the daemon
//! keeps working meanwhile by rescanning what it cannot watch. The limits are read where they
//! apply: `fs.inotify.*` for the whole system, and `user.max_inotify_*` for the user namespace
//! (a container), the smaller counting.

use std::collections::HashSet;
use std::path::Path;

/// What the shipped `examples/sysctl.d/60-purgewatch.conf` sets: a suggestion is at least this.
pub const SHIPPED_WATCHES: u64 = 1_048_576;
pub const SHIPPED_INSTANCES: u64 = 1024;
pub const SHIPPED_QUEUE: u64 = 1_048_576;

/// Where the suggested lines go to outlive a reboot (the package's own values are in
/// `/usr/lib/sysctl.d/60-purgewatch.conf`; this file takes precedence over it).
pub const SYSCTL_FILE: &str = "/etc/sysctl.d/60-purgewatch.conf";

/// The kernel's limits (`None`: not readable here).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Kernel {
    pub watches: Option<u64>,
    pub instances: Option<u64>,
    pub queue: Option<u64>,
}

impl Kernel {
    /// Reads the limits that apply to this process.
    pub fn read() -> Kernel {
        Kernel::read_from(Path::new("/proc/sys"))
    }

    fn read_from(sys: &Path) -> Kernel {
        let num = |rel: &str| {
            std::fs::read_to_string(sys.join(rel))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
        };
        let least = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Kernel {
            watches: least(num("fs/inotify/max_user_watches"), num("user/max_inotify_watches")),
            instances: least(num("fs/inotify/max_user_instances"), num("user/max_inotify_instances")),
            queue: num("fs/inotify/max_queued_events"),
        }
    }
}

/// inotify watches and instances held by processes of this user.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InUse {
    pub watches: u64,
    pub instances: u64,
}

impl InUse {
    /// What this user's processes hold, less those `skip` names (by pid and command name):
    /// the process asking, or a daemon the rules are already running in.
    pub fn now(skip: impl Fn(u32, &str) -> bool) -> InUse {
        let uid = unsafe { libc::geteuid() };
        let mut out = InUse::default();
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return out;
        };
        for p in procs.flatten() {
            let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let dir = p.path();
            let owned = {
                use std::os::unix::fs::MetadataExt;
                std::fs::metadata(&dir).is_ok_and(|m| m.uid() == uid)
            };
            if !owned {
                continue;
            }
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            if skip(pid, comm.trim()) {
                continue;
            }
            let held = InUse::of(&dir);
            out.watches += held.watches;
            out.instances += held.instances;
        }
        out
    }

    /// What this process holds.
    pub fn own() -> InUse {
        InUse::of(Path::new("/proc/self"))
    }

    /// What the process at `/proc/PID` holds: each inotify descriptor, and a watch per `inotify
    /// wd:` line of its fdinfo.
    fn of(proc_dir: &Path) -> InUse {
        let mut out = InUse::default();
        let Ok(fds) = std::fs::read_dir(proc_dir.join("fd")) else {
            return out;
        };
        for fd in fds.flatten() {
            if let Some(watches) = inotify_watches(proc_dir, &fd.file_name()) {
                out.instances += 1;
                out.watches += watches;
            }
        }
        out
    }
}

/// The watches of descriptor `fd` of the process at `proc_dir`; `None` when it is no inotify
/// instance.
fn inotify_watches(proc_dir: &Path, fd: &std::ffi::OsStr) -> Option<u64> {
    if !std::fs::read_link(proc_dir.join("fd").join(fd)).is_ok_and(|l| l.as_os_str() == "anon_inode:inotify") {
        return None;
    }
    let info = std::fs::read_to_string(proc_dir.join("fdinfo").join(fd)).unwrap_or_default();
    Some(info.lines().filter(|l| l.starts_with("inotify wd:")).count() as u64)
}

/// What the rules need.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// One per directory of every tree, and per tree's parent (nested trees share theirs).
    pub watches: u64,
    /// The tree with the most files, and how many: a deploy that rewrites it at once makes
    /// about two events per file.
    pub largest: Option<(String, u64)>,
}

impl Needs {
    /// Counts the directories and files of `trees` (rule name, root) on disk: for `check`.
    pub fn count(trees: &[(String, &Path)]) -> Needs {
        let mut dirs: HashSet<std::path::PathBuf> = HashSet::new();
        let mut largest: Option<(String, u64)> = None;
        for (name, root) in trees {
            if let Some(parent) = root.parent() {
                dirs.insert(parent.to_path_buf());
            }
            let mut files = 0u64;
            for entry in walkdir::WalkDir::new(root).into_iter().flatten() {
                if entry.file_type().is_dir() {
                    dirs.insert(entry.into_path());
                } else {
                    files += 1;
                }
            }
            if largest.as_ref().is_none_or(|(_, n)| files > *n) {
                largest = Some((name.clone(), files));
            }
        }
        Needs {
            watches: dirs.len() as u64,
            largest,
        }
    }
}

/// A limit too low for the rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shortfall {
    /// `fs.inotify.max_user_watches`, …
    pub sysctl: &'static str,
    pub limit: u64,
    /// What the rules need, with what other processes of the user hold.
    pub need: u64,
    /// The value to set.
    pub suggest: u64,
    /// What happens meanwhile.
    pub meanwhile: String,
}

impl std::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is {}, the rules need {}: {}",
            self.sysctl, self.limit, self.need, self.meanwhile
        )
    }
}

/// The limits too low for `needs`, given what other processes hold (`others`). Watches count
/// as short from 90% of the limit (a new site or directory would not be watched), the queue when
/// it holds fewer events than a rewrite of the largest tree makes.
pub fn judge(kernel: Kernel, others: InUse, needs: &Needs) -> Vec<Shortfall> {
    let mut out = Vec::new();
    if let Some(limit) = kernel.watches {
        let need = others.watches + needs.watches;
        if need * 10 > limit * 9 {
            out.push(Shortfall {
                sysctl: "fs.inotify.max_user_watches",
                limit,
                need,
                suggest: SHIPPED_WATCHES.max((need * 2).next_power_of_two()),
                meanwhile: format!(
                    "{} watches for the rules' directories{}; a tree that cannot be fully watched is rescanned every 30 s instead (its changes are purged late, and `/healthz` reports it)",
                    needs.watches,
                    if others.watches > 0 {
                        format!(" and {} held by other processes of this user", others.watches)
                    } else {
                        String::new()
                    }
                ),
            });
        }
    }
    if let Some(limit) = kernel.instances {
        let need = others.instances + 1;
        if need > limit {
            out.push(Shortfall {
                sysctl: "fs.inotify.max_user_instances",
                limit,
                need,
                suggest: SHIPPED_INSTANCES.max((need * 2).next_power_of_two()),
                meanwhile: format!(
                    "other processes of this user hold {}; without one every tree is rescanned every 30 s instead of watched",
                    others.instances
                ),
            });
        }
    }
    if let (Some(limit), Some((rule, files))) = (kernel.queue, &needs.largest) {
        let need = files.saturating_mul(2);
        if need > limit {
            out.push(Shortfall {
                sysctl: "fs.inotify.max_queued_events",
                limit,
                need,
                suggest: SHIPPED_QUEUE.max(need.next_power_of_two()),
                meanwhile: format!(
                    "a deploy that rewrites rule \"{rule}\"'s {files} files at once can overflow the kernel's event queue; then every tree is compared again (exact, but it reads every tree's metadata)"
                ),
            });
        }
    }
    out
}

/// One warning naming every limit in `short`, and the commands that raise them; `None` when
/// nothing is short.
pub fn warning(short: &[Shortfall]) -> Option<String> {
    if short.is_empty() {
        return None;
    }
    let lines: Vec<String> = short.iter().map(|s| format!("  {s}")).collect();
    Some(format!(
        "the kernel's inotify limits are too low for these rules:\n{}\n  {}",
        lines.join("\n"),
        advice(short)
    ))
}

/// For `check`: the limits too low for `rules`, their trees counted on disk, what other
/// processes of the user hold counted but for purgewatch's own (a daemon already running these
/// rules holds what they need).
pub fn check_rules(rules: &[crate::config::Rule]) -> Option<String> {
    let trees: Vec<(String, &Path)> = rules
        .iter()
        .filter(|r| r.watch.is_dir())
        .map(|r| (r.name.clone(), r.watch.as_path()))
        .collect();
    let needs = Needs::count(&trees);
    let me = std::process::id();
    let others = InUse::now(|pid, comm| pid == me || comm == "purgewatch");
    warning(&judge(Kernel::read(), others, &needs))
}

/// The commands that raise the limits now and at every boot.
pub fn advice(short: &[Shortfall]) -> String {
    let mut out = String::from(
        "raise them as root (the package's /usr/lib/sysctl.d/60-purgewatch.conf sets enough for most hosts: `sysctl --system` applies it), or set them now and for every boot:",
    );
    for s in short {
        out.push_str(&format!("\n    sysctl -w {}={}", s.sysctl, s.suggest));
    }
    for s in short {
        out.push_str(&format!("\n    echo '{} = {}' >> {SYSCTL_FILE}", s.sysctl, s.suggest));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smaller_of_the_system_and_namespace_limits_counts() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path();
        std::fs::create_dir_all(sys.join("fs/inotify")).unwrap();
        std::fs::create_dir_all(sys.join("user")).unwrap();
        std::fs::write(sys.join("fs/inotify/max_user_watches"), "8192\n").unwrap();
        std::fs::write(sys.join("user/max_inotify_watches"), "50\n").unwrap();
        std::fs::write(sys.join("fs/inotify/max_user_instances"), "128\n").unwrap();
        std::fs::write(sys.join("fs/inotify/max_queued_events"), "16384\n").unwrap();
        assert_eq!(
            Kernel::read_from(sys),
            Kernel {
                watches: Some(50),
                instances: Some(128),
                queue: Some(16384)
            }
        );
    }

    #[test]
    fn limits_too_low_are_named_with_what_to_set() {
        let kernel = Kernel {
            watches: Some(8192),
            instances: Some(128),
            queue: Some(16384),
        };
        let needs = Needs {
            watches: 52_000,
            largest: Some(("docs".into(), 100_000)),
        };
        let short = judge(
            kernel,
            InUse {
                watches: 100,
                instances: 128,
            },
            &needs,
        );
        let names: Vec<&str> = short.iter().map(|s| s.sysctl).collect();
        assert_eq!(
            names,
            [
                "fs.inotify.max_user_watches",
                "fs.inotify.max_user_instances",
                "fs.inotify.max_queued_events"
            ]
        );
        assert_eq!((short[0].limit, short[0].need), (8192, 52_100));
        assert_eq!(short[0].suggest, SHIPPED_WATCHES);
        assert_eq!(short[2].need, 200_000);
        assert!(
            short[2].to_string().contains("rule \"docs\"'s 100000 files"),
            "{}",
            short[2]
        );
        let text = advice(&short);
        assert!(text.contains("sysctl -w fs.inotify.max_user_watches=1048576"), "{text}");
        assert!(
            text.contains("echo 'fs.inotify.max_queued_events = 1048576' >> /etc/sysctl.d/60-purgewatch.conf"),
            "{text}"
        );
        // Enough of everything: nothing said.
        let fine = judge(
            Kernel {
                watches: Some(1 << 20),
                instances: Some(1024),
                queue: Some(1 << 20),
            },
            InUse::default(),
            &needs,
        );
        assert!(fine.is_empty(), "{fine:?}");
        // A suggestion is never below what the rules need.
        let huge = Needs {
            watches: 3_000_000,
            largest: None,
        };
        assert_eq!(judge(kernel, InUse::default(), &huge)[0].suggest, 8_388_608);
    }

    #[test]
    fn this_process_watches_are_counted_from_its_fdinfo() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        assert!(fd >= 0);
        for p in [dir.path().to_path_buf(), dir.path().join("a"), dir.path().join("a/b")] {
            let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
            assert!(unsafe { libc::inotify_add_watch(fd, c.as_ptr(), libc::IN_MODIFY) } >= 0);
        }
        let name = std::ffi::OsString::from(fd.to_string());
        let held = inotify_watches(Path::new("/proc/self"), &name);
        let own = InUse::own();
        unsafe { libc::close(fd) };
        assert_eq!(held, Some(3));
        assert!(own.instances >= 1 && own.watches >= 3, "{own:?}");
        let stdin = std::ffi::OsString::from("0");
        assert_eq!(inotify_watches(Path::new("/proc/self"), &stdin), None);
        let needs = Needs::count(&[("site".into(), dir.path())]);
        assert_eq!(needs.watches, 4, "three directories and the parent");
        assert_eq!(needs.largest, Some(("site".into(), 0)));
    }
}

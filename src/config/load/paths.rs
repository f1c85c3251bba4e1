//! What the loader asks of the filesystem: where a path really is, what filesystem holds it
//! (tmpfs sites, system trees a rule must not watch), and whether a program can be run.

use super::*;

/// `path` with every symlink resolved, as far as it exists; the rest is appended as written (a
/// state directory may not exist yet).
pub(super) fn real_path(path: &Path) -> PathBuf {
    let mut missing = Vec::new();
    let mut cur = path;
    loop {
        if let Ok(real) = std::fs::canonicalize(cur) {
            return missing.iter().rev().fold(real, |acc: PathBuf, part| acc.join(part));
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_os_string());
                cur = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// What a directory that is no site is, when it is one: the root, or on a kernel
/// pseudo-filesystem (walking `/proc` never ends: it holds every process's view of the whole
/// tree). Judged by the filesystem's type, not by its path: a tmpfs (`/dev/shm`, `/run`) is a
/// real filesystem, and a site there is watched like any other.
pub(super) fn system_tree(real: &Path) -> Option<String> {
    if real == Path::new("/") {
        return Some("the root of the filesystem".into());
    }
    filesystem_type(real)
        .filter(|fs| PSEUDO_FILESYSTEMS.contains(&fs.as_str()))
        .map(|fs| format!("on a kernel pseudo-filesystem ({fs})"))
}

/// Filesystems that hold no files of a site.
pub(super) const PSEUDO_FILESYSTEMS: &[&str] = &[
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "cgroup",
    "cgroup2",
    "debugfs",
    "tracefs",
    "securityfs",
    "pstore",
    "bpf",
    "configfs",
    "fusectl",
    "mqueue",
    "efivarfs",
    "binfmt_misc",
    "selinuxfs",
    "autofs",
    "rpc_pipefs",
    "nsfs",
    "hugetlbfs",
];

/// The type of the filesystem `real` (a path with no symlinks) is on: the mount with the
/// longest mount point above it in `/proc/self/mountinfo` (the last one, for a mount over
/// another), or, where that cannot be read, from `statfs`'s magic number.
pub(super) fn filesystem_type(real: &Path) -> Option<String> {
    if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
        let mut best: Option<(usize, String)> = None;
        for line in info.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let (Some(point), Some(dash)) = (fields.get(4), fields.iter().position(|f| *f == "-")) else {
                continue;
            };
            let Some(fstype) = fields.get(dash + 1) else { continue };
            let point = PathBuf::from(unescape_mount_point(point));
            let depth = point.components().count();
            if real.starts_with(&point) && best.as_ref().is_none_or(|(d, _)| depth >= *d) {
                best = Some((depth, fstype.to_string()));
            }
        }
        if let Some((_, fstype)) = best {
            return Some(fstype);
        }
    }
    statfs_type(real)
}

/// mountinfo writes space, tab, newline and backslash in a mount point as `\ooo`.
pub(super) fn unescape_mount_point(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(octal) = s.get(i + 1..i + 4)
            && let Ok(v) = u8::from_str_radix(octal, 8)
        {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(target_os = "linux")]
pub(super) fn statfs_type(real: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(real.as_os_str().as_bytes()).ok()?;
    // SAFETY: an all-zero statfs is a valid value of the plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a statfs the call writes.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let name = match st.f_type as i64 {
        0x9fa0 => "proc",
        0x6265_6572 => "sysfs",
        0x1cd1 => "devpts",
        0x0027_e0eb => "cgroup",
        0x6367_7270 => "cgroup2",
        0x6462_6720 => "debugfs",
        0x7472_6163 => "tracefs",
        0x7363_6673 => "securityfs",
        0x6165_676c => "pstore",
        0xcafe_4a11 => "bpf",
        _ => "other",
    };
    Some(name.to_string())
}

#[cfg(not(target_os = "linux"))]
pub(super) fn statfs_type(_real: &Path) -> Option<String> {
    None
}

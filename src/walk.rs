//! Walking a rule's tree (or a directory of it): its kept files and the ones its filter
//! leaves out, following directory symlinks that stay within the tree.

use std::collections::BTreeSet;
use std::path::Path;

use crate::links::Links;
use crate::route::{Filter, Verdict};
use crate::shutdown::Stop;

/// Files under a directory, split into kept and filtered.
#[derive(Debug)]
pub struct Walk {
    pub files: Vec<String>,
    pub filtered: Vec<(String, Verdict)>,
    /// False when the walk ended early because the process is stopping.
    pub complete: bool,
    /// Directory symlinks to directories of the same tree, followed.
    pub links: Links,
}

impl Default for Walk {
    fn default() -> Walk {
        Walk {
            files: Vec::new(),
            filtered: Vec::new(),
            complete: true,
            links: Links::default(),
        }
    }
}

/// Directory symlinks already warned about (one warning per link).
static OUTSIDE_WARNED: std::sync::Mutex<BTreeSet<std::path::PathBuf>> = std::sync::Mutex::new(BTreeSet::new());

/// Walks `dir` following symlinks; `prefix` is `dir`'s path relative to the watched root. A
/// directory symlink that leads out of the watched tree (`etc -> /etc`) is not followed unless
/// the rule says `follow_symlinks: true`: its files are no part of the site, and may be secret.
///
/// A walk `stop` is asked to end ends early: [`Walk::complete`] is false.
pub fn walk(dir: &Path, filter: &Filter, prefix: Option<&str>, stop: Stop) -> Walk {
    let mut out = Walk::default();
    let join = |rel: String| match prefix {
        Some(p) => format!("{p}/{rel}"),
        None => rel,
    };
    let depth = prefix.map_or(0, |p| p.split('/').count());
    let root = dir.ancestors().nth(depth).unwrap_or(dir);
    // Resolved only when a directory symlink is met (most walks meet none).
    let mut real_root: Option<std::path::PathBuf> = None;
    let mut it = walkdir::WalkDir::new(dir).follow_links(true).into_iter();
    let mut seen = 0u32;
    while let Some(entry) = it.next() {
        seen = seen.wrapping_add(1);
        if seen.is_multiple_of(1024) && stop.requested() {
            // A stop was asked for: a partial list only misses files (found at the next start),
            // it never makes one look deleted.
            out.complete = false;
            break;
        }
        let Ok(entry) = entry else { continue };
        // A directory symlink: within the tree it is an alias (its files are served at both
        // paths); out of it, followed only when the rule says so.
        // The walk's own start counts when it is a directory of the tree (a link made, or
        // re-pointed, is walked from itself), not when it is the watched root.
        let below_root = entry.depth() > 0 || prefix.is_some();
        let within = (entry.path_is_symlink() && entry.file_type().is_dir() && below_root).then(|| {
            let real_root =
                real_root.get_or_insert_with(|| std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf()));
            std::fs::canonicalize(entry.path())
                .ok()
                .filter(|real| real.starts_with(&*real_root))
                .map(|real| crate::route::relative(real_root, &real).unwrap_or_default())
        });
        if let Some(Some(target)) = &within {
            let link = match crate::route::relative(dir, entry.path()) {
                Some(rel) => Some(join(rel)),
                None => prefix.map(str::to_string),
            };
            if let Some(link) = link {
                out.links.insert(link, target.clone());
            }
        }
        if within.as_ref().is_some_and(|w| w.is_none()) && !filter.follow_symlinks {
            let mut warned = OUTSIDE_WARNED.lock().unwrap_or_else(|e| e.into_inner());
            if warned.insert(entry.path().to_path_buf()) {
                tracing::warn!(
                    "{}: a symlink to a directory outside the watched tree: not followed (set `follow_symlinks: true` on the rule to follow it)",
                    entry.path().display()
                );
            }
            it.skip_current_dir();
            continue;
        }
        let Some(rel) = crate::route::relative(dir, entry.path()) else {
            if entry.depth() > 0 {
                tracing::warn!("{}: {}", entry.path().display(), crate::route::UNNAMED);
                if entry.file_type().is_dir() {
                    it.skip_current_dir();
                }
            }
            continue;
        };
        let rel = join(rel);
        if entry.file_type().is_dir() {
            if filter.excludes_dir(&rel) {
                it.skip_current_dir();
            }
            continue;
        }
        match filter.verdict(&rel) {
            Verdict::Keep => out.files.push(rel),
            v => out.filtered.push((rel, v)),
        }
    }
    out
}

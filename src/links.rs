//! Directory symlinks inside a watched tree (`docs/current -> v2`): a web server serves every
//! file below `docs/v2/` at `docs/current/` too, so a change to one is a change to both URLs.
//!
//! The kernel reports a change once, at whichever spelling its watch was made through; a
//! comparison adds the other spellings ([`Links::add_aliases`]). A link that leads to one of its
//! own ancestors (`self -> .`) is a loop: the walk does not descend into it, and it is no alias
//! (the tree is not doubled, nor its URLs made endless).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The links of one tree: link path → the directory it leads to, both relative to the root.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Links(BTreeMap<String, String>);

/// How many links a path may go through to reach its directory (links to links).
const MAX_HOPS: usize = 8;

impl Links {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Records that `link` leads to `target` (a directory of the same tree, not an ancestor
    /// of `link`: the walk refuses those as loops).
    pub fn insert(&mut self, link: String, target: String) {
        if !is_within(&link, &target) {
            self.0.insert(link, target);
        }
    }

    /// Takes in what a walk of part of the tree found.
    pub fn extend(&mut self, other: Links) {
        self.0.extend(other.0);
    }

    /// Forgets the links that are not links to the same place any more (removed, re-pointed,
    /// their directory gone): one `readlink` each.
    pub fn retain_valid(&mut self, root: &Path) {
        if self.0.is_empty() {
            return;
        }
        let real_root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        self.0.retain(|link, target| {
            let abs = root.join(link);
            std::fs::symlink_metadata(&abs).is_ok_and(|m| m.file_type().is_symlink())
                && std::fs::canonicalize(&abs)
                    .ok()
                    .and_then(|real| crate::route::relative(&real_root, &real))
                    .is_some_and(|r| r == *target)
        });
    }

    /// The directory `rel` really is in: links in its path resolved.
    fn resolve(&self, rel: &str) -> String {
        let mut path = rel.to_string();
        for _ in 0..MAX_HOPS {
            let Some((link, target)) = self.0.iter().rev().find(|(link, _)| is_within(&path, link)) else {
                break;
            };
            path = rebase(&path, link, target);
        }
        path
    }

    /// Every other path the file at `rel` is served at: its real path, and the path through
    /// each link that leads to a directory containing it.
    pub fn aliases(&self, rel: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        if self.0.is_empty() {
            return out;
        }
        let real = self.resolve(rel);
        let mut todo = vec![real.clone()];
        out.insert(real);
        while let Some(p) = todo.pop() {
            for (link, target) in &self.0 {
                if is_within(&p, target) && out.len() < 64 {
                    let alias = rebase(&p, target, link);
                    if out.insert(alias.clone()) {
                        todo.push(alias);
                    }
                }
            }
        }
        out.remove(rel);
        out
    }

    /// Adds to `candidates` every other path their files are served at.
    pub fn add_aliases(&self, candidates: &mut BTreeSet<String>) {
        if self.0.is_empty() {
            return;
        }
        let extra: Vec<String> = candidates.iter().flat_map(|c| self.aliases(c)).collect();
        candidates.extend(extra);
    }
}

/// Whether `path` is `dir` or below it (`dir` empty: the root, which holds everything).
fn is_within(path: &str, dir: &str) -> bool {
    dir.is_empty() || path == dir || (path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/'))
}

/// `path` (within `from`) moved to `to`.
fn rebase(path: &str, from: &str, to: &str) -> String {
    let rest = if from.is_empty() {
        path
    } else {
        path[from.len()..].trim_start_matches('/')
    };
    match (to.is_empty(), rest.is_empty()) {
        (true, _) => rest.to_string(),
        (false, true) => to.to_string(),
        (false, false) => format!("{to}/{rest}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(pairs: &[(&str, &str)]) -> Links {
        let mut l = Links::default();
        for (a, b) in pairs {
            l.insert(a.to_string(), b.to_string());
        }
        l
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_file_below_a_linked_directory_is_served_at_both_paths() {
        let l = links(&[("docs/current", "docs/v2"), ("latest", "docs/v2")]);
        assert_eq!(
            l.aliases("docs/v2/x.html"),
            set(&["docs/current/x.html", "latest/x.html"])
        );
        assert_eq!(
            l.aliases("docs/current/x.html"),
            set(&["docs/v2/x.html", "latest/x.html"])
        );
        assert!(l.aliases("docs/v1/x.html").is_empty());
        assert!(
            l.aliases("docs/v22/x.html").is_empty(),
            "a prefix of a name is not its directory"
        );
        // The link itself (a deleted link, a directory made in its place) has its target's names.
        assert_eq!(l.aliases("docs/current"), set(&["docs/v2", "latest"]));
    }

    #[test]
    fn links_to_links_and_links_to_the_root_resolve() {
        let l = links(&[("a", "b"), ("b", "c/d"), ("mirror", "")]);
        assert_eq!(l.resolve("a/x.html"), "c/d/x.html");
        // A link to the root is an ancestor of itself: a loop, never an alias.
        assert!(!l.0.contains_key("mirror"));
        assert_eq!(l.aliases("c/d/x.html"), set(&["a/x.html", "b/x.html"]));
    }

    #[test]
    fn a_link_into_its_own_ancestor_doubles_nothing() {
        let l = links(&[("docs/self", "docs"), ("docs/up", "")]);
        assert!(l.is_empty());
        let mut c = set(&["docs/a.html"]);
        l.add_aliases(&mut c);
        assert_eq!(c, set(&["docs/a.html"]));
    }

    #[test]
    fn links_that_moved_or_went_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("docs/v1")).unwrap();
        std::fs::create_dir_all(root.join("docs/v2")).unwrap();
        std::os::unix::fs::symlink("v2", root.join("docs/current")).unwrap();
        std::os::unix::fs::symlink("v1", root.join("docs/old")).unwrap();
        let mut l = links(&[
            ("docs/current", "docs/v2"),
            ("docs/old", "docs/v1"),
            ("docs/gone", "docs/v1"),
        ]);
        std::fs::remove_file(root.join("docs/old")).unwrap();
        std::os::unix::fs::symlink("v2", root.join("docs/old")).unwrap();
        l.retain_valid(root);
        assert_eq!(l, links(&[("docs/current", "docs/v2")]));
    }
}

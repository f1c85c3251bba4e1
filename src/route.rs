//! Which rule a path belongs to, and whether the rule keeps it.

use std::path::Path;

use globset::{GlobSet, GlobSetBuilder};
use regex::Regex;

/// Why a rule keeps or skips a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Matched this exclude glob.
    Excluded(String),
    /// Matched none of the include globs.
    NotIncluded,
    /// Matched none of the `match` regexes.
    NotMatched,
}

impl Verdict {
    pub fn is_keep(&self) -> bool {
        matches!(self, Verdict::Keep)
    }

    pub fn describe(&self) -> String {
        match self {
            Verdict::Keep => "kept".into(),
            Verdict::Excluded(g) => format!("excluded by \"{g}\""),
            Verdict::NotIncluded => "not included".into(),
            Verdict::NotMatched => "not matched".into(),
        }
    }
}

/// A rule's include, exclude and match filters, compiled.
#[derive(Debug, Clone)]
pub struct Filter {
    include: Option<GlobSet>,
    exclude: GlobSet,
    exclude_globs: Vec<String>,
    matches: Vec<Regex>,
    /// Follow directory symlinks that lead out of the tree.
    pub follow_symlinks: bool,
}

impl Filter {
    /// The filters of a rule (see `config::Rule::filter`): its `include`, `exclude` and `match`,
    /// and whether symlinks that lead out of its tree are followed.
    pub fn new(
        include: &[globset::Glob],
        exclude: &[globset::Glob],
        matches: &[Regex],
        follow_symlinks: bool,
    ) -> Filter {
        let set = |globs: &[globset::Glob]| {
            let mut b = GlobSetBuilder::new();
            for g in globs {
                b.add(g.clone());
            }
            // Every glob compiled on its own when the rules were loaded; a set of valid globs builds.
            b.build().unwrap_or_else(|_| GlobSet::empty())
        };
        Filter {
            include: (!include.is_empty()).then(|| set(include)),
            exclude: set(exclude),
            exclude_globs: exclude.iter().map(|g| g.glob().to_string()).collect(),
            matches: matches.to_vec(),
            follow_symlinks,
        }
    }

    /// Applies the filters to `rel`, a path relative to the watched directory with `/` separators.
    pub fn verdict(&self, rel: &str) -> Verdict {
        if let Some(i) = self.exclude.matches(rel).first() {
            return Verdict::Excluded(self.exclude_globs[*i].clone());
        }
        if let Some(inc) = &self.include
            && !inc.is_match(rel)
        {
            return Verdict::NotIncluded;
        }
        if !self.matches.is_empty() && !self.matches.iter().any(|re| re.is_match(rel)) {
            return Verdict::NotMatched;
        }
        Verdict::Keep
    }

    /// True when `rel` names a directory whose whole subtree is excluded (`.git/**` and `.git`).
    pub fn excludes_dir(&self, rel: &str) -> bool {
        self.exclude.is_match(format!("{rel}/x"))
            && self.exclude.is_match(format!("{rel}/x/y.html"))
            && self.exclude.is_match(format!("{rel}/.x"))
    }
}

/// `path` relative to `root`, with `/` separators; `None` when it is outside `root`, is `root`,
/// or has a name that is not UTF-8 (see [`UNNAMED`]).
pub fn relative(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    if rel.as_os_str().is_empty() {
        return None;
    }
    // Sized to fit: the string is kept (in the manifest, or a record of changes) per file.
    let mut out = String::with_capacity(rel.as_os_str().len());
    for (i, c) in rel.components().enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(c.as_os_str().to_str()?);
    }
    Some(out)
}

/// Why a file whose name is not UTF-8 is left out: a URL is text, and a lossy name stands for a
/// file that does not exist (it used to be hashed as missing and dropped without a word).
pub const UNNAMED: &str = "its name is not UTF-8, so purgewatch cannot name its URL and leaves it out (rename it, or purge by hand: `purgewatch purge TARGET --all`)";

/// Whether `path` lies under `root` but [`relative`] cannot name it (a name that is not UTF-8).
pub fn unnamed(root: &Path, path: &Path) -> bool {
    path.strip_prefix(root)
        .is_ok_and(|rel| !rel.as_os_str().is_empty() && rel.to_str().is_none())
}

/// Where an event's path falls under one rule.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// Not under the rule's tree.
    Outside,
    /// The rule's watched path itself: its directory was replaced, re-pointed or removed.
    Root,
    /// Under the tree, but with a name that is not UTF-8 (see [`UNNAMED`]).
    Unnamed,
    /// Under the tree, and nothing the rule purges: no file it keeps, no directory that may
    /// hold one, nothing it already tracks.
    Skip(String),
    /// A path the rule must compare at its next batch, relative to its tree.
    Keep(String),
}

/// Routes `path` for the rule watching `watch` (resolved to `root`) with `filter`. `tracked`
/// says whether the rule already knows the relative path (in its manifest, as a directory of
/// files in it, or dirty): such a path is kept whatever the filter says now, so that a file
/// that was purged and is now removed or excluded is compared (and forgotten) too. A directory
/// is kept unless the filter excludes everything below it: files may be made in it before its
/// watch is in place. `maybe_dir`: false when the event cannot have brought a new directory (a
/// file written, a path moved away, attributes changed): the disk is not asked (an rsync deploy
/// renames 20,000 excluded temporary files, and each such question is a failed lookup in the
/// kernel that waits for the directory's lock while rsync renames the next file).
pub fn route(
    root: &Path,
    watch: &Path,
    filter: &Filter,
    path: &Path,
    maybe_dir: bool,
    tracked: impl FnOnce(&str) -> bool,
) -> Route {
    if path == watch {
        return Route::Root;
    }
    let Some(rel) = relative(root, path) else {
        return if unnamed(root, path) {
            Route::Unnamed
        } else {
            Route::Outside
        };
    };
    let keep =
        filter.verdict(&rel).is_keep() || tracked(&rel) || (maybe_dir && !filter.excludes_dir(&rel) && path.is_dir());
    if keep { Route::Keep(rel) } else { Route::Skip(rel) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Rule;
    use globset::GlobBuilder;

    #[test]
    fn an_event_path_is_routed_to_keep_skip_root_outside_or_unnamed() {
        use std::os::unix::ffi::OsStrExt;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("blog")).unwrap();
        std::fs::create_dir_all(root.join(".git/objects")).unwrap();
        let f = Rule::filter(&rule(&["**/*.html"], &[".git/**"], &[]));
        let none = |_: &str| false;
        let watch = Path::new("/srv/current");
        assert_eq!(route(root, watch, &f, watch, true, none), Route::Root);
        assert_eq!(
            route(root, watch, &f, Path::new("/elsewhere/a.html"), true, none),
            Route::Outside
        );
        assert_eq!(route(root, watch, &f, root, true, none), Route::Outside);
        let bad = root.join(std::ffi::OsStr::from_bytes(b"caf\xe9.html"));
        assert_eq!(route(root, watch, &f, &bad, true, none), Route::Unnamed);
        assert_eq!(
            route(root, watch, &f, &root.join("blog/a.html"), true, none),
            Route::Keep("blog/a.html".into())
        );
        // A directory may hold kept files; an excluded one cannot.
        assert_eq!(
            route(root, watch, &f, &root.join("blog"), true, none),
            Route::Keep("blog".into())
        );
        assert_eq!(
            route(root, watch, &f, &root.join(".git/objects"), true, none),
            Route::Skip(".git/objects".into())
        );
        assert_eq!(
            route(root, watch, &f, &root.join("a.css"), true, none),
            Route::Skip("a.css".into())
        );
        // A file the rule tracks is kept whatever the filter says now (a removed directory is
        // no directory any more, but its files are in the manifest).
        assert_eq!(
            route(root, watch, &f, &root.join("a.css"), true, |r| r == "a.css"),
            Route::Keep("a.css".into())
        );
        assert_eq!(
            route(root, watch, &f, &root.join("gone"), true, |r| r == "gone"),
            Route::Keep("gone".into())
        );
        // Told it is no directory (a temporary file moved away), the router does not look.
        let tmp_dir = root.join(".blog.XXXX");
        std::fs::create_dir(&tmp_dir).unwrap();
        assert_eq!(
            route(root, watch, &f, &tmp_dir, true, none),
            Route::Keep(".blog.XXXX".into())
        );
        assert_eq!(
            route(root, watch, &f, &tmp_dir, false, none),
            Route::Skip(".blog.XXXX".into())
        );
    }

    fn rule(include: &[&str], exclude: &[&str], matches: &[&str]) -> Rule {
        let g = |s: &&str| GlobBuilder::new(s).literal_separator(true).build().unwrap();
        Rule {
            include: include.iter().map(g).collect(),
            exclude: exclude.iter().map(g).collect(),
            matches: matches.iter().map(|m| Regex::new(m).unwrap()).collect(),
            index_files: vec![],
            ..Rule::new("r", "/w")
        }
    }

    #[test]
    fn include_exclude_match() {
        let f = Rule::filter(&rule(
            &["**/*.html", "**/*.css"],
            &["**/*.tmp", "**/.*", ".git/**"],
            &["^blog/", "^news/"],
        ));
        assert_eq!(f.verdict("blog/a.html"), Verdict::Keep);
        assert_eq!(f.verdict("news/x/y.css"), Verdict::Keep);
        assert_eq!(f.verdict("blog/a.js"), Verdict::NotIncluded);
        assert_eq!(f.verdict("about.html"), Verdict::NotMatched);
        assert_eq!(f.verdict("blog/.a.html"), Verdict::Excluded("**/.*".into()));
        assert_eq!(f.verdict("x.tmp"), Verdict::Excluded("**/*.tmp".into()));
        assert_eq!(f.verdict(".git/HEAD"), Verdict::Excluded(".git/**".into()));
    }

    #[test]
    fn star_stays_within_a_directory() {
        let f = Rule::filter(&rule(&["*.html"], &[], &[]));
        assert!(f.verdict("a.html").is_keep());
        assert_eq!(f.verdict("blog/a.html"), Verdict::NotIncluded);
    }

    #[test]
    fn no_filters_keeps_everything() {
        let f = Rule::filter(&rule(&[], &[], &[]));
        assert!(f.verdict("any/thing.bin").is_keep());
        assert!(!f.excludes_dir("any"));
        let f = Rule::filter(&rule(&[], &[".git/**", "**/.*"], &[]));
        assert!(f.excludes_dir(".git"));
        assert!(!f.excludes_dir("blog"));
    }

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative(Path::new("/w"), Path::new("/w/a/b.html")).as_deref(),
            Some("a/b.html")
        );
        assert_eq!(relative(Path::new("/w"), Path::new("/w")), None);
        assert_eq!(relative(Path::new("/w"), Path::new("/x/a")), None);
    }

    #[test]
    fn names_that_are_not_utf8_are_not_guessed() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let bad = Path::new("/w/blog").join(OsStr::from_bytes(b"caf\xe9.html"));
        assert_eq!(relative(Path::new("/w"), &bad), None);
        assert!(unnamed(Path::new("/w"), &bad));
        assert!(!unnamed(Path::new("/w"), Path::new("/w/blog/cafe.html")));
        assert!(!unnamed(Path::new("/x"), &bad));
        // Only the part below the root counts: a root with such a name still names its files.
        let root = Path::new("/").join(OsStr::from_bytes(b"s\xe9"));
        assert!(!unnamed(&root, &root.join("a.html")));
        assert_eq!(relative(&root, &root.join("a.html")).as_deref(), Some("a.html"));
    }
}

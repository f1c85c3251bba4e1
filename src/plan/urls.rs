//! The URL lists of targets that take URLs (not patterns): each changed file's URLs, and, where
//! the changes widened to a directory or the whole rule, every URL of it from the manifest (or
//! one prefix entry, for a target that purges by prefix).

use super::*;

/// How a target that takes URL lists widens: a directory only when all of it changed, the
/// whole rule past half of its files (as the VIMS defaults).
pub(super) const URL_SETTINGS: PatternSettings = PatternSettings {
    max_bytes: usize::MAX,
    widen_threshold: 1.0,
    all_threshold: 0.5,
};

/// The URLs that cover `files` for a target that takes URL lists, each with the file it is for
/// (none for a URL of a widened directory), and whether that is everything. A widened directory
/// and a whole rule are their files' URLs (from the manifest); everything only for a rule gone
/// from the rules, or one served at `/` with no `base_url` whose files mostly changed.
pub fn url_list<M: Borrow<Manifest>>(
    files: &[PendingFile],
    rules: &[Rule],
    manifests: &BTreeMap<String, M>,
    absolute: bool,
    all_at_once: bool,
    prefixes: bool,
) -> (Vec<(String, Option<usize>)>, bool) {
    let mut list = UrlList {
        out: Vec::new(),
        seen: BTreeSet::new(),
        absolute,
        prefixes,
    };
    let mut by_rule: BTreeMap<&str, Vec<(usize, &PendingFile)>> = BTreeMap::new();
    for (i, f) in files.iter().enumerate() {
        by_rule.entry(f.rule.as_str()).or_default().push((i, f));
    }
    for (name, rule_files) in by_rule {
        let Some(rule) = rules.iter().find(|r| r.name == name) else {
            if all_at_once {
                return (vec![], true);
            }
            // A rule gone from the rules: its files' paths are all that is known of it.
            for (i, f) in &rule_files {
                list.push(format!("/{}", f.path), Some(*i));
            }
            continue;
        };
        let empty = Manifest::default();
        let manifest = manifests.get(name).map_or(&empty, Borrow::borrow);
        let refs: Vec<&PendingFile> = rule_files.iter().map(|(_, f)| *f).collect();
        let mut items = BTreeSet::new();
        let whole = rule.purge == PurgeMode::All || !rule_items(rule, &refs, manifest, &URL_SETTINGS, &mut items);
        if whole && all_at_once && rule_space(rule).1 == Item::All {
            return (vec![], true);
        }
        let widened = if whole { Widened::Whole } else { Widened::Items(&items) };
        list.rule(rule, &rule_files, manifest, widened);
    }
    (list.out, false)
}

/// What a rule's changed files widened to.
pub(super) enum Widened<'a> {
    /// The whole rule.
    Whole,
    /// These items (directories among them).
    Items(&'a BTreeSet<Item>),
}

/// The URLs of a purge, each once, in order, with the file it is for.
pub(super) struct UrlList {
    out: Vec<(String, Option<usize>)>,
    seen: BTreeSet<String>,
    /// With the rule's `base_url` in front.
    absolute: bool,
    /// The target purges by prefix (`…/dir/*`).
    prefixes: bool,
}

impl UrlList {
    fn push(&mut self, u: String, file: Option<usize>) {
        if self.seen.insert(u.clone()) {
            self.out.push((u, file));
        }
    }

    /// The URLs of `rule`'s changed `files` (with their index in the batch), and of the part of
    /// its tree they widened to.
    fn rule(&mut self, rule: &Rule, files: &[(usize, &PendingFile)], manifest: &Manifest, widened: Widened) {
        let base = rule.base_url.as_deref().filter(|_| self.absolute);
        let absolute = |u: &str| match base {
            Some(base) => format!("{base}{u}"),
            _ => u.to_string(),
        };
        let widened_dirs = |items: &BTreeSet<Item>| -> Vec<String> {
            items
                .iter()
                .filter_map(|it| match it {
                    Item::Prefix(p) => Some(p.clone()),
                    _ => None,
                })
                .collect()
        };
        // A target that purges by prefix: the widened directories, or the whole rule, as one
        // entry each (`…/dir/*`), and the URLs they do not cover.
        let dirs: Vec<String> = match (self.prefixes, &widened) {
            (false, _) => vec![],
            (true, Widened::Whole) => vec![rule.url_prefix.clone()],
            (true, Widened::Items(items)) => widened_dirs(items),
        };
        // Each changed file's own URLs first, so that a request names the files it is for.
        for (i, f) in files {
            for u in urls_for(rule, &f.path) {
                if !dirs.iter().any(|d| u.starts_with(d.as_str())) {
                    self.push(absolute(&u), Some(*i));
                }
            }
        }
        if self.prefixes {
            for dir in dirs {
                self.push(absolute(&format!("{dir}*")), None);
            }
            return;
        }
        let tree: Vec<&str> = match widened {
            Widened::Whole => manifest.paths().collect(),
            Widened::Items(items) => widened_dirs(items)
                .iter()
                .filter_map(|p| p.strip_prefix(rule.url_prefix.as_str()))
                .flat_map(|dir| manifest.under(dir.trim_end_matches('/')))
                .collect(),
        };
        for path in tree {
            for u in urls_for(rule, path) {
                self.push(absolute(&u), None);
            }
        }
    }
}

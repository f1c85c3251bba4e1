//! From changed files to provider requests: URLs, index aliases and VIMS regex patterns.
//!
//! A SiteHost target can only purge a whole stack, so any change is one request. A VIMS target
//! purges by regex, searched for in each cached URL, which may be a path (`/blog/a.html?v=2`), a
//! full URL (`https://host/blog/a.html`) or host and path run together (`host/blog/a.html`, nginx's
//! default key). So every pattern starts with [`PATH_START`]: the start of the key, an optional
//! scheme and host, then the path — tied to the start of the *path*, so that `/index.xml` never
//! matches `/blog/index.xml`. Each URL ends in `(?:$|\?)`: it matches the URL itself and with a
//! query string, but not a longer sibling (`/a.html.bak`, `/blog2`). Paths are escaped, shared prefixes and suffixes are factored
//! into one alternation, and a set too long for `max_bytes` is split across calls. Only syntax that
//! Rust's `regex`, RE2, PCRE and Python share is used: literals, `\`-escaped punctuation,
//! `(?:…)`, `|`, `?` and `$`.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};

use percent_encoding::{AsciiSet, utf8_percent_encode};

use crate::config::{PatternSettings, PurgeMode, Rule, Shape, Target};
use crate::escape::PATH;
use crate::manifest::{Manifest, ancestors};
use crate::request::ChangeKind;
use crate::request::{PendingFile, Request};

mod urls;
use urls::URL_SETTINGS;
pub use urls::url_list;

/// At most this many VIMS calls for one batch; past it, purging everything is both fewer
/// requests and safer.
pub const MAX_VIMS_CALLS: usize = 10;
/// "Everything" is only chosen by share for batches at least this large.
pub const MIN_FILES_FOR_ALL: usize = 50;
/// The end of one URL: end of the cache key, or a query string.
pub const URL_END: &str = "(?:$|\\?)";
/// The start of a path in a cache key: the key's start, then an optional `scheme://`, then an
/// optional host (anything up to the first `/`). Every pattern but `*` begins with it.
pub const PATH_START: &str = "^(?:[^/]*//)?[^/]*";

/// What a VIMS pattern must cover.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Item {
    /// Exactly this URL (with or without a query string).
    Url(String),
    /// Every URL that starts with this path (a widened directory).
    Prefix(String),
    /// Everything.
    All,
}

/// The URL a file is served at, and the URLs of its directory when it is an index file.
pub fn urls_for(rule: &Rule, rel: &str) -> Vec<String> {
    let mut out = vec![format!("{}{}", rule.url_prefix, rel)];
    let (dir, name) = match rel.rfind('/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => ("", rel),
    };
    if rule.index_files.iter().any(|f| f == name) {
        let slash = if dir.is_empty() {
            rule.url_prefix.clone()
        } else {
            format!("{}{}/", rule.url_prefix, dir)
        };
        let bare = slash.trim_end_matches('/').to_string();
        out.push(slash);
        if !bare.is_empty() {
            out.push(bare);
        }
    }
    out
}

/// Where a group of items lives in a cache that several sites may share: the host a rule's
/// `base_url` names, or none (any host).
pub type Host = Option<String>;

/// What a batch's patterns must cover, host by host; and, should that take too many calls,
/// the URL space of each rule in the batch (its "everything").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scoped {
    pub groups: BTreeMap<Host, BTreeSet<Item>>,
    pub spaces: BTreeMap<Host, BTreeSet<Item>>,
}

impl Scoped {
    fn insert(&mut self, host: Host, item: Item) {
        self.groups.entry(host).or_default().insert(item);
    }

    /// Everything the target caches: `*`.
    fn all() -> Scoped {
        let everything = BTreeMap::from([(None, BTreeSet::from([Item::All]))]);
        Scoped {
            groups: everything.clone(),
            spaces: everything,
        }
    }

    fn is_all(&self) -> bool {
        self.groups.get(&None).is_some_and(|g| g.contains(&Item::All))
    }
}

/// A rule's whole URL space in a shared cache: its `url_prefix` as a prefix, on its host when
/// `base_url` names one; everything (`*`) only for a rule served at `/` on any host.
pub fn rule_space(rule: &Rule) -> (Host, Item) {
    let host = rule.host().map(str::to_string);
    if host.is_none() && rule.url_prefix == "/" {
        (None, Item::All)
    } else {
        (host, Item::Prefix(rule.url_prefix.clone()))
    }
}

/// The items that cover a target's pending files, scoped per host.
pub fn items<M: Borrow<Manifest>>(
    files: &[PendingFile],
    rules: &[Rule],
    manifests: &BTreeMap<String, M>,
    s: &PatternSettings,
) -> Scoped {
    let mut by_rule: BTreeMap<&str, Vec<&PendingFile>> = BTreeMap::new();
    for f in files {
        by_rule.entry(f.rule.as_str()).or_default().push(f);
    }
    let mut out = Scoped::default();
    for (name, files) in by_rule {
        let Some(rule) = rules.iter().find(|r| r.name == name) else {
            // The rule is gone (reloaded away): its URLs are unknown, so purge everything.
            return Scoped::all();
        };
        let (host, space) = rule_space(rule);
        out.spaces.entry(host.clone()).or_default().insert(space.clone());
        if rule.purge == PurgeMode::All {
            out.insert(host, space);
            continue;
        }
        let empty = Manifest::default();
        let manifest = manifests.get(name).map_or(&empty, Borrow::borrow);
        let group = out.groups.entry(host).or_default();
        if !rule_items(rule, &files, manifest, s, group) {
            group.insert(space);
        }
    }
    if out.is_all() {
        return Scoped::all();
    }
    out
}

/// The patterns for `scoped`: each host's group on its own (at most `max_bytes` each, as
/// [`patterns_on`] builds them). Past [`MAX_VIMS_CALLS`], each rule's whole URL space instead,
/// and past that too, `*`.
pub fn scoped_patterns(scoped: &Scoped, max_bytes: usize) -> Vec<String> {
    let build = |groups: &BTreeMap<Host, BTreeSet<Item>>| -> Vec<String> {
        groups
            .iter()
            .flat_map(|(host, items)| patterns_on(host.as_deref(), items, max_bytes))
            .collect()
    };
    if scoped.is_all() {
        return vec!["*".into()];
    }
    let out = build(&scoped.groups);
    if out.len() <= MAX_VIMS_CALLS {
        return out;
    }
    let spaces = build(&scoped.spaces);
    if spaces.len() <= MAX_VIMS_CALLS && !scoped.spaces.values().any(|g| g.contains(&Item::All)) {
        return spaces;
    }
    vec!["*".into()]
}

/// Adds the items for one rule's files to `out`; false when the rule's whole URL space is to be
/// purged instead (most of its files changed).
fn rule_items(
    rule: &Rule,
    files: &[&PendingFile],
    manifest: &Manifest,
    s: &PatternSettings,
    out: &mut BTreeSet<Item>,
) -> bool {
    // Changed and deleted files per directory; totals are the recorded files there now plus the
    // ones just deleted, counted only as far as the threshold needs.
    let mut changed: BTreeMap<&str, usize> = BTreeMap::new();
    let mut deleted: BTreeMap<&str, usize> = BTreeMap::new();
    for f in files {
        for dir in ancestors(&f.path) {
            *changed.entry(dir).or_default() += 1;
            if f.kind == ChangeKind::Deleted {
                *deleted.entry(dir).or_default() += 1;
            }
        }
    }
    let whole = |dir: &str, min: usize, share: f64| {
        let c = changed.get(dir).copied().unwrap_or(0);
        if c < min {
            return false;
        }
        // c >= share * total  <=>  total <= c / share: count no further than that.
        let limit = if share > 0.0 {
            (c as f64 / share).floor() as usize + 1
        } else {
            usize::MAX
        };
        let t = manifest.count_under(dir, limit) + deleted.get(dir).copied().unwrap_or(0);
        c as f64 >= share * t.max(c) as f64
    };
    if whole("", MIN_FILES_FOR_ALL, s.all_threshold) {
        return false;
    }
    for f in files {
        let widened = ancestors(&f.path).skip(1).find(|d| whole(d, 2, s.widen_threshold));
        match widened {
            Some(dir) => {
                out.insert(Item::Prefix(format!("{}{}/", rule.url_prefix, dir)));
                let index = f
                    .path
                    .rsplit('/')
                    .next()
                    .is_some_and(|n| rule.index_files.iter().any(|i| i == n));
                if index && f.path.rfind('/').map(|i| &f.path[..i]) == Some(dir) {
                    out.insert(Item::Url(format!("{}{}", rule.url_prefix, dir)));
                }
            }
            None => out.extend(urls_for(rule, &f.path).into_iter().map(Item::Url)),
        }
    }
    true
}

/// The requests for a target's pending files.
pub fn plan<M: Borrow<Manifest>>(
    target: &Target,
    files: &[PendingFile],
    rules: &[Rule],
    manifests: &BTreeMap<String, M>,
) -> Vec<Request> {
    draft(target, files, rules, manifests).requests()
}

/// A plan in two steps: [`draft`] reads the rules and manifests (cheap), [`Draft::requests`]
/// needs nothing else, and builds the VIMS patterns (for a 1,000-file batch, ~20 ms): the daemon
/// runs it on a blocking thread, off its loop.
#[derive(Debug)]
pub enum Draft {
    Nothing,
    Stack,
    Patterns {
        items: Scoped,
        max_bytes: usize,
    },
    /// URL lists of at most `max` each, or everything.
    Urls {
        urls: Vec<(String, Option<usize>)>,
        everything: bool,
        files: Vec<PendingFile>,
        max: usize,
    },
}

/// The first step of [`plan`].
pub fn draft<M: Borrow<Manifest>>(
    target: &Target,
    files: &[PendingFile],
    rules: &[Rule],
    manifests: &BTreeMap<String, M>,
) -> Draft {
    if files.is_empty() {
        return Draft::Nothing;
    }
    match target.kind.shape() {
        Shape::Whole => Draft::Stack,
        Shape::Patterns { max_bytes } => {
            let settings = target.kind.pattern_settings().unwrap_or(PatternSettings {
                max_bytes,
                ..URL_SETTINGS
            });
            Draft::Patterns {
                items: items(files, rules, manifests, &settings),
                max_bytes,
            }
        }
        Shape::Urls {
            max,
            absolute,
            everything: all_at_once,
            prefixes,
        } => {
            let (urls, everything) = url_list(files, rules, manifests, absolute, all_at_once, prefixes);
            Draft::Urls {
                urls,
                everything,
                files: files.to_vec(),
                max,
            }
        }
    }
}

/// The one request that purges everything `target` caches.
pub fn everything(target: &Target) -> Request {
    match target.kind.shape() {
        Shape::Whole => Request::Stack,
        Shape::Patterns { .. } => Request::Pattern("*".into()),
        Shape::Urls { .. } => Request::Urls {
            urls: vec![],
            everything: true,
            files: vec![],
        },
    }
}

/// Requests for exactly `urls` (no widening) through `target`: a re-purge of stale URLs, or
/// `purge --url`. `host` scopes patterns to a rule's host.
pub fn exact(target: &Target, urls: &[String], host: Option<&str>, base_url: Option<&str>) -> Vec<Request> {
    match target.kind.shape() {
        Shape::Whole => vec![Request::Stack],
        Shape::Patterns { max_bytes } => {
            let items: BTreeSet<Item> = urls.iter().cloned().map(Item::Url).collect();
            let pats = patterns_on(host, &items, max_bytes);
            if pats.len() > MAX_VIMS_CALLS {
                return vec![Request::Pattern("*".into())];
            }
            pats.into_iter().map(Request::Pattern).collect()
        }
        Shape::Urls { max, absolute, .. } => urls
            .chunks(max.max(1))
            .map(|chunk| Request::Urls {
                urls: chunk
                    .iter()
                    .map(|u| match base_url {
                        Some(base) if absolute => format!("{base}{u}"),
                        _ => u.clone(),
                    })
                    .collect(),
                everything: false,
                files: vec![],
            })
            .collect(),
    }
}

impl Draft {
    /// The requests: the second step of [`plan`].
    pub fn requests(self) -> Vec<Request> {
        match self {
            Draft::Nothing => vec![],
            Draft::Stack => vec![Request::Stack],
            Draft::Patterns { items, max_bytes } => scoped_patterns(&items, max_bytes)
                .into_iter()
                .map(Request::Pattern)
                .collect(),
            Draft::Urls {
                everything: true,
                files,
                ..
            } => vec![Request::Urls {
                urls: vec![],
                everything: true,
                files,
            }],
            Draft::Urls { urls, files, max, .. } => urls
                .chunks(max.max(1))
                .enumerate()
                .map(|(n, chunk)| {
                    let mut mine: BTreeSet<usize> = chunk.iter().filter_map(|(_, f)| *f).collect();
                    // Files with no URL of their own in any request go with the first.
                    if n == 0 && urls.iter().all(|(_, f)| f.is_none()) {
                        mine.extend(0..files.len());
                    }
                    Request::Urls {
                        urls: chunk.iter().map(|(u, _)| u.clone()).collect(),
                        everything: false,
                        files: mine.into_iter().map(|i| files[i].clone()).collect(),
                    }
                })
                .collect(),
        }
    }
}

/// What the strictest common URL encoders escape in a path: everything but letters, digits,
/// `-._~` and `/`.
const STRICT: &AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// The fewest patterns, each at most `max_bytes` long where one URL allows, that cover `items`
/// on any host; `*` past [`MAX_VIMS_CALLS`].
pub fn patterns(items: &BTreeSet<Item>, max_bytes: usize) -> Vec<String> {
    let out = patterns_on(None, items, max_bytes);
    if out.len() > MAX_VIMS_CALLS {
        return vec!["*".into()];
    }
    out
}

/// The start of a pattern for paths on `host` (the host or nothing, in a full-URL or
/// host-and-path key), or on any host.
pub fn path_start(host: Option<&str>) -> String {
    match host {
        None => PATH_START.to_string(),
        Some(h) => {
            let mut escaped = String::new();
            escape_into(&mut escaped, &h.chars().collect::<Vec<_>>());
            format!("^(?:[^/]*//)?(?:{escaped})?")
        }
    }
}

/// The fewest patterns, each at most `max_bytes` long where one URL allows, that cover `items`
/// on `host` (any host for none). `*` only for [`Item::All`] on any host.
pub fn patterns_on(host: Option<&str>, items: &BTreeSet<Item>, max_bytes: usize) -> Vec<String> {
    if items.is_empty() {
        return vec![];
    }
    if items.contains(&Item::All) {
        return match host {
            None => vec!["*".into()],
            Some(_) => vec![format!("{}/", path_start(host))],
        };
    }
    let start_text = path_start(host);
    let prefixes: Vec<&String> = items
        .iter()
        .filter_map(|i| if let Item::Prefix(p) = i { Some(p) } else { None })
        .collect();
    let covered = |u: &str| prefixes.iter().any(|p| u.starts_with(p.as_str()));
    // Each item as characters; exact URLs end in a sentinel that escapes to URL_END.
    let mut keys: Vec<Vec<char>> = Vec::new();
    for item in items {
        let (s, exact) = match item {
            Item::Url(u) if covered(u) => continue,
            Item::Url(u) => (u, true),
            Item::Prefix(p) => (p, false),
            Item::All => unreachable!(),
        };
        let encoded = utf8_percent_encode(s, PATH).to_string();
        // Browsers send escapes in upper-case hex; other clients may not, and a cache keeps the
        // URL as it was asked for.
        let mut push = |form: &str| {
            let mut k: Vec<char> = form.chars().collect();
            if exact {
                k.push(END);
            }
            keys.push(k);
        };
        push(s);
        // The spellings clients send: the path as a browser escapes it, and as the strictest
        // common encoders do (Python's `quote`, many HTTP libraries: every character but
        // letters, digits, `-._~` and `/`, so `photo%20%281%29.jpg`, `a%5B1%5D.html`), each with
        // upper- and lower-case hex.
        let full = utf8_percent_encode(s, STRICT).to_string();
        for form in [encoded, full] {
            if form != *s {
                push(&form);
                let lower = crate::escape::lower_hex(&form);
                if lower != form {
                    push(&lower);
                }
            }
        }
    }
    keys.sort();
    keys.dedup();
    let refs: Vec<&[char]> = keys.iter().map(|k| k.as_slice()).collect();
    let mut out = Vec::new();
    let mut start = 0;
    while start < refs.len() {
        // The longest run from `start` whose pattern fits: grow by doubling, then bisect.
        let fits = |end: usize| start_text.len() + build(&refs[start..end]).len() <= max_bytes;
        let mut good = start + 1;
        let mut step = 1;
        while good + step <= refs.len() && fits(good + step) {
            good += step;
            step *= 2;
        }
        let (mut lo, mut hi) = (good, (good + step).min(refs.len() + 1));
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if mid <= refs.len() && fits(mid) {
                lo = mid
            } else {
                hi = mid
            }
        }
        out.push(format!("{start_text}{}", build(&refs[start..lo])));
        start = lo;
    }
    out
}

const END: char = '\0';

fn escape_into(out: &mut String, chars: &[char]) {
    for &c in chars {
        match c {
            END => out.push_str(URL_END),
            '\\' | '.' | '+' | '*' | '?' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
}

/// A regex for a sorted, deduplicated set of strings: shared prefixes and suffixes are written
/// once, the rest is an alternation.
fn build(strs: &[&[char]]) -> String {
    let mut out = String::new();
    build_into(&mut out, strs);
    out
}

fn build_into(out: &mut String, strs: &[&[char]]) {
    if strs.len() == 1 {
        escape_into(out, strs[0]);
        return;
    }
    let lcp = strs
        .iter()
        .skip(1)
        .fold(strs[0].len(), |n, s| n.min(common_prefix(strs[0], s)));
    if lcp > 0 {
        escape_into(out, &strs[0][..lcp]);
        let rest: Vec<&[char]> = strs.iter().map(|s| &s[lcp..]).collect();
        return build_into(out, &rest);
    }
    // No shared prefix; sorted input puts the empty string (if any) first.
    let optional = strs[0].is_empty();
    let rest = if optional { &strs[1..] } else { strs };
    if optional {
        out.push_str("(?:");
    }
    let lcs = rest
        .iter()
        .skip(1)
        .fold(rest[0].len(), |n, s| n.min(common_suffix(rest[0], s)));
    if rest.len() > 1 && lcs > 0 {
        let mut stripped: Vec<&[char]> = rest.iter().map(|s| &s[..s.len() - lcs]).collect();
        stripped.sort();
        stripped.dedup();
        build_into(out, &stripped);
        escape_into(out, &rest[0][rest[0].len() - lcs..]);
    } else if rest.len() == 1 {
        escape_into(out, rest[0]);
    } else {
        out.push_str("(?:");
        let mut i = 0;
        let mut first = true;
        while i < rest.len() {
            let c = rest[i][0];
            let j = i + rest[i..].iter().take_while(|s| s[0] == c).count();
            if !first {
                out.push('|');
            }
            first = false;
            build_into(out, &rest[i..j]);
            i = j;
        }
        out.push(')');
    }
    if optional {
        out.push_str(")?");
    }
}

fn common_prefix(a: &[char], b: &[char]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn common_suffix(a: &[char], b: &[char]) -> usize {
    a.iter().rev().zip(b.iter().rev()).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests;

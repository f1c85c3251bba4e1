use super::*;
use crate::config::{PurgeMode, RetryPolicy, TargetKind, Vims};
use crate::manifest::FileMeta;
use proptest::prelude::*;
use regex::Regex;
use std::time::Duration;

fn rule(prefix: &str) -> Rule {
    Rule {
        targets: vec!["cdn".into()],
        url_prefix: prefix.into(),
        ..Rule::new("site", "/w")
    }
}

fn settings() -> PatternSettings {
    PatternSettings {
        max_bytes: 4096,
        widen_threshold: 1.0,
        all_threshold: 0.5,
    }
}

fn vims() -> Target {
    Target {
        name: "cdn".into(),
        debounce: Duration::from_secs(1),
        max_delay: Duration::from_secs(10),
        retry: RetryPolicy {
            attempts: 1,
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_secs(1),
        },
        rate_limit: 10.0,
        on_failure: None,
        kind: TargetKind::Vims(Vims {
            api_url: "http://x".into(),
            token: Default::default(),
            cdn_id: "7".into(),
            host: "all".into(),
            patterns: settings(),
        }),
    }
}

fn manifest(paths: &[&str]) -> Manifest {
    let meta = FileMeta {
        size: 1,
        mtime_ns: 1,
        hash: [0; 16],
    };
    Manifest::from_entries(paths.iter().map(|p| (p.to_string(), meta)))
}

fn pending(paths: &[&str]) -> Vec<PendingFile> {
    paths
        .iter()
        .map(|p| PendingFile {
            rule: "site".into(),
            path: p.to_string(),
            kind: ChangeKind::Modified,
        })
        .collect()
}

/// Every form a CDN may key a URL by: the path, the full URL, host and path run together
/// (nginx's default key), each with and without a query string.
fn forms(url: &str) -> Vec<String> {
    [
        url.to_string(),
        format!("https://example.com{url}"),
        format!("example.com{url}"),
    ]
    .into_iter()
    .flat_map(|k| [format!("{k}?q=1"), k])
    .collect()
}

fn matches_any(patterns: &[String], s: &str) -> bool {
    Compiled::new(patterns).is_match(s)
}

/// Patterns compiled once (`*` matches everything).
struct Compiled(Vec<Option<Regex>>);

impl Compiled {
    fn new(patterns: &[String]) -> Compiled {
        Compiled(
            patterns
                .iter()
                .map(|p| (p != "*").then(|| Regex::new(p).unwrap()))
                .collect(),
        )
    }
    fn is_match(&self, s: &str) -> bool {
        self.0.iter().any(|r| r.as_ref().is_none_or(|r| r.is_match(s)))
    }
}

#[test]
fn index_aliases() {
    assert_eq!(
        urls_for(&rule("/"), "blog/index.html"),
        vec!["/blog/index.html", "/blog/", "/blog"]
    );
    assert_eq!(urls_for(&rule("/"), "index.html"), vec!["/index.html", "/"]);
    assert_eq!(
        urls_for(&rule("/docs/"), "index.html"),
        vec!["/docs/index.html", "/docs/", "/docs"]
    );
    assert_eq!(urls_for(&rule("/"), "blog/a.html"), vec!["/blog/a.html"]);
}

#[test]
fn shared_prefix_and_suffix_are_factored() {
    let items: BTreeSet<Item> = ["/blog/a.html", "/blog/b.html"]
        .iter()
        .map(|u| Item::Url(u.to_string()))
        .collect();
    assert_eq!(
        patterns(&items, 4096),
        vec!["^(?:[^/]*//)?[^/]*/blog/(?:a|b)\\.html(?:$|\\?)".to_string()]
    );
}

#[test]
fn changed_urls_match_in_every_form_and_siblings_do_not() {
    let site = manifest(&[
        "blog/index.html",
        "blog/post.html",
        "blog/post2.html",
        "blog/post.html.bak",
        "blogroll.html",
        "about.html",
        "index.html",
    ]);
    let changed = pending(&["blog/index.html", "blog/post.html"]);
    let m = BTreeMap::from([("site".to_string(), site)]);
    let reqs = plan(&vims(), &changed, &[rule("/")], &m);
    let pats: Vec<String> = reqs
        .iter()
        .map(|r| match r {
            Request::Pattern(p) => p.clone(),
            _ => panic!(),
        })
        .collect();
    assert_eq!(pats.len(), 1, "{pats:?}");
    for url in ["/blog/index.html", "/blog/", "/blog", "/blog/post.html"] {
        for f in forms(url) {
            assert!(matches_any(&pats, &f), "{f} not matched by {pats:?}");
        }
    }
    for url in [
        "/blog/post2.html",
        "/blog/post.html.bak",
        "/blogroll.html",
        "/about.html",
        "/index.html",
        "/blog/other/",
    ] {
        assert!(!matches_any(&pats, url), "{url} matched by {pats:?}");
    }
}

#[test]
fn a_whole_directory_is_widened_and_most_of_the_site_is_everything() {
    let site = manifest(&["a/1.html", "a/2.html", "a/index.html", "b.html", "c.html"]);
    let m = BTreeMap::from([("site".to_string(), site)]);
    let it = items(
        &pending(&["a/1.html", "a/2.html", "a/index.html"]),
        &[rule("/")],
        &m,
        &settings(),
    );
    assert_eq!(
        it.groups[&None],
        BTreeSet::from([Item::Prefix("/a/".into()), Item::Url("/a".into())])
    );
    let many: Vec<String> = (0..100).map(|i| format!("p{i}.html")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let m = BTreeMap::from([("site".to_string(), manifest(&refs))]);
    let it = items(&pending(&refs[..60]), &[rule("/")], &m, &settings());
    assert_eq!(it.groups[&None], BTreeSet::from([Item::All]));
}

#[test]
fn sitehost_is_one_stack_purge_and_purge_all_is_star() {
    let mut r = rule("/");
    r.purge = PurgeMode::All;
    let m: BTreeMap<String, Manifest> = BTreeMap::new();
    assert_eq!(
        plan(&vims(), &pending(&["a.html"]), &[r], &m),
        vec![Request::Pattern("*".into())]
    );
}

#[test]
fn special_characters_are_escaped_and_encoded() {
    let items = BTreeSet::from([
        Item::Url("/a (1)+[x].html".into()),
        Item::Url("/caf\u{e9} menu.html".into()),
    ]);
    let pats = patterns(&items, 4096);
    for u in [
        "/a (1)+[x].html",
        "/a%20(1)+[x].html",
        "/caf\u{e9} menu.html",
        "/caf%C3%A9%20menu.html",
        "/caf%c3%a9%20menu.html",
        "https://example.com/caf%c3%a9%20menu.html?v=2",
    ] {
        assert!(matches_any(&pats, u), "{u} {pats:?}");
    }
    assert!(!matches_any(&pats, "/a (1)+[x]xhtml"));
}

#[test]
fn long_sets_split_at_the_limit() {
    let items: BTreeSet<Item> = (0..400)
        .map(|i| Item::Url(format!("/section-{}/page-{i}-with-a-long-name.html", i % 7)))
        .collect();
    let pats = patterns(&items, 1024);
    assert!(pats.len() >= 2, "{}", pats.len());
    assert!(pats.iter().all(|p| p.len() <= 1024));
    for it in &items {
        let Item::Url(u) = it else { panic!() };
        assert!(matches_any(&pats, u));
    }
}

fn segment() -> impl Strategy<Value = String> {
    prop::string::string_regex("[a-z0-9._()+ -]{1,8}").unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn every_changed_url_matches_and_no_other_site_url_does(
        site in prop::collection::btree_set(prop::collection::vec(segment(), 1..4).prop_map(|v| v.join("/")), 2..80),
        pick in prop::collection::vec(any::<bool>(), 80),
        max in 200usize..4096,
    ) {
        let site: Vec<String> = site.into_iter().collect();
        let changed: Vec<&String> = site.iter().zip(&pick).filter(|(_, p)| **p).map(|(s, _)| s).collect();
        let items: BTreeSet<Item> = changed.iter().map(|p| Item::Url(format!("/{p}"))).collect();
        let pats = patterns(&items, max);
        for p in &pats {
            prop_assert!(p == "*" || regex::RegexBuilder::new(p).build().is_ok(), "{} does not compile", p);
        }
        if pats.iter().any(|p| p == "*") {
            return Ok(());
        }
        let compiled = Compiled::new(&pats);
        for c in &changed {
            for f in forms(&format!("/{c}")) {
                prop_assert!(compiled.is_match(&f), "{} not matched by {:?}", f, pats);
            }
        }
        for s in &site {
            let url = format!("/{s}");
            if changed.iter().any(|c| **c == *s) {
                continue;
            }
            for f in forms(&url) {
                prop_assert!(!compiled.is_match(&f), "unchanged {} matched by {:?}", f, pats);
            }
        }
    }

    /// Through the whole planner, on sites full of decoys that end the same way (`index.xml` at
    /// many depths, `page/N/` under many sections, the home page and directory aliases, regex
    /// metacharacters, non-ASCII names): the patterns match the changed URLs and their aliases in
    /// every key form, and no other URL of the site — except where the planner chose `*` or a
    /// directory prefix by its documented rules.
    #[test]
    fn planned_patterns_match_exactly_the_changed_urls_among_decoys(
        site in prop::collection::btree_set(
            (prop::sample::select(SECTIONS.to_vec()), prop::sample::select(NAMES.to_vec()))
                .prop_map(|(d, n)| if d.is_empty() { n.to_string() } else { format!("{d}/{n}") }),
            2..60,
        ),
        pick in prop::collection::vec(any::<bool>(), 60),
        prefix in prop::sample::select(vec!["/", "/docs/"]),
        max in 300usize..4096,
    ) {
        let site: Vec<String> = site.into_iter().collect();
        let changed: Vec<&str> = site.iter().zip(&pick).filter(|(_, p)| **p).map(|(s, _)| s.as_str()).collect();
        prop_assume!(!changed.is_empty());
        let r = rule(prefix);
        let refs: Vec<&str> = site.iter().map(String::as_str).collect();
        let m = BTreeMap::from([("site".to_string(), manifest(&refs))]);
        let mut s = settings();
        s.max_bytes = max;
        let its = items(&pending(&changed), std::slice::from_ref(&r), &m, &s).groups.remove(&None).unwrap_or_default();
        let mut target = vims();
        if let TargetKind::Vims(v) = &mut target.kind {
            v.patterns = s;
        }
        let pats: Vec<String> = plan(&target, &pending(&changed), std::slice::from_ref(&r), &m)
            .into_iter()
            .map(|q| match q { Request::Pattern(p) => p, _ => "*".into() })
            .collect();
        if its.contains(&Item::All) || pats.iter().any(|p| p == "*") {
            return Ok(());
        }
        let expected = |u: &str| {
            its.contains(&Item::Url(u.to_string()))
                || its.iter().any(|i| matches!(i, Item::Prefix(p) if u.starts_with(p.as_str())))
        };
        let compiled = Compiled::new(&pats);
        let all_urls: BTreeSet<String> = site.iter().flat_map(|p| urls_for(&r, p)).collect();
        for c in &changed {
            for u in urls_for(&r, c) {
                prop_assert!(expected(&u), "{} is not planned: {:?}", u, its);
            }
        }
        for u in &all_urls {
            let want = expected(u);
            let encoded = utf8_percent_encode(u, PATH).to_string();
            for key in [u.clone(), encoded.clone(), crate::escape::lower_hex(&encoded)] {
                for f in forms(&key) {
                    prop_assert_eq!(compiled.is_match(&f), want, "{} (want {}) by {:?}", f, want, pats);
                }
            }
        }
    }
}

/// Directories of the decoy sites: sections, taxonomies, pagination, and names a regex or a URL
/// must escape.
const SECTIONS: &[&str] = &[
    "",
    "blog",
    "docs",
    "tags/x",
    "tags/index.xml",
    "page/2",
    "blog/page/2",
    "tags/x/page/2",
    "a+b",
    "(c)",
    "caf\u{e9}",
    "x.y",
    "[z]",
];
/// File names of the decoy sites.
const NAMES: &[&str] = &[
    "index.html",
    "index.xml",
    "post.html",
    "post.html.bak",
    "a(1).html",
    "caf\u{e9} menu.html",
    "$^.css",
    "2",
];

/// One CDN, several sites: "everything" for a rule is its own URL space (its `url_prefix`, on
/// its `base_url`'s host), never `*` when another site may share the cache.
#[test]
fn everything_is_scoped_to_the_rules_url_space() {
    let many: Vec<String> = (0..100).map(|i| format!("p{i}.html")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let m = BTreeMap::from([("site".to_string(), manifest(&refs))]);
    let changed = pending(&refs[..60]);

    // Served at /a/ on any host: a prefix pattern, which leaves /b/ alone.
    let at_a = rule("/a/");
    let pats = plan(&vims(), &changed, std::slice::from_ref(&at_a), &m)
        .into_iter()
        .map(|r| match r {
            Request::Pattern(p) => p,
            other => panic!("{other:?}"),
        })
        .collect::<Vec<_>>();
    assert_eq!(pats, vec!["^(?:[^/]*//)?[^/]*/a/".to_string()]);
    assert!(matches_any(&pats, "https://x.com/a/p1.html") && !matches_any(&pats, "/b/p1.html"));

    // With a base_url: the host or nothing, and its "everything" is the host's `/`.
    let mut on_host = rule("/");
    on_host.base_url = Some("https://www.a.com".into());
    assert_eq!(
        plan(&vims(), &changed, std::slice::from_ref(&on_host), &m),
        vec![Request::Pattern("^(?:[^/]*//)?(?:www\\.a\\.com)?/".into())]
    );
    let few = plan(&vims(), &pending(&["p1.html"]), std::slice::from_ref(&on_host), &m);
    let Request::Pattern(p) = &few[0] else {
        panic!("{few:?}")
    };
    assert_eq!(p, "^(?:[^/]*//)?(?:www\\.a\\.com)?/p1\\.html(?:$|\\?)");
    let pats = vec![p.clone()];
    for key in ["/p1.html", "https://www.a.com/p1.html", "www.a.com/p1.html?v=2"] {
        assert!(matches_any(&pats, key), "{key}");
    }
    for key in ["https://www.b.com/p1.html", "www.b.com/p1.html", "/x/p1.html"] {
        assert!(!matches_any(&pats, key), "{key}");
    }

    // `purge: all` is the rule's space too; only a rule at `/` on any host is `*`.
    let mut all_docs = rule("/docs/");
    all_docs.purge = PurgeMode::All;
    assert_eq!(
        plan(&vims(), &pending(&["p1.html"]), &[all_docs], &m),
        vec![Request::Pattern("^(?:[^/]*//)?[^/]*/docs/".into())]
    );
}

/// Escapes beyond the browser's: the strictest common encoders' spellings are purged too.
#[test]
fn strictly_encoded_spellings_are_matched() {
    let items = BTreeSet::from([
        Item::Url("/photo (1).jpg".into()),
        Item::Url("/a[1].html".into()),
        Item::Url("/x^|\\'!*.html".into()),
    ]);
    let pats = patterns(&items, 4096);
    for key in [
        "/photo%20%281%29.jpg",
        "/photo%20%281%29.jpg?v=1",
        "https://example.com/photo%20%281%29.jpg",
        "/a%5B1%5D.html",
        "/a%5b1%5d.html",
        "/x%5E%7C%5C%27%21%2A.html",
        "/photo (1).jpg",
    ] {
        assert!(matches_any(&pats, key), "{key} not matched by {pats:?}");
    }
    assert!(!matches_any(&pats, "/a%5B2%5D.html"));
}

/// A target that takes URL lists: a rule with `purge: all` lists every URL of its tree; one
/// whose changes cover a whole directory lists that directory's URLs; otherwise only the
/// changed files' own.
#[test]
fn a_url_list_covers_the_whole_rule_or_the_widened_directory() {
    let tree = manifest(&["a.html", "b.html", "c.css", "blog/x.html", "blog/y.html", "d/e.html"]);
    let manifests = BTreeMap::from([("site".to_string(), tree)]);
    let urls = |rule: &Rule, files: &[&str], prefixes: bool| -> Vec<String> {
        let (list, all) = url_list(
            &pending(files),
            std::slice::from_ref(rule),
            &manifests,
            false,
            false,
            prefixes,
        );
        assert!(!all);
        list.into_iter().map(|(u, _)| u).collect()
    };
    let all = Rule {
        purge: PurgeMode::All,
        ..rule("/")
    };
    let listed = urls(&all, &["a.html"], false);
    for u in ["/a.html", "/c.css", "/blog/x.html", "/d/e.html"] {
        assert!(listed.iter().any(|l| l == u), "{u} missing from {listed:?}");
    }
    assert_eq!(listed[0], "/a.html", "the changed file's own URL first");
    assert_eq!(urls(&all, &["a.html"], true), ["/*"], "by prefix: the rule's one entry");

    let changed = rule("/");
    let listed = urls(&changed, &["blog/x.html", "blog/y.html"], false);
    assert_eq!(listed, ["/blog/x.html", "/blog/y.html"]);
    let listed = urls(&changed, &["a.html"], false);
    assert!(listed.iter().all(|u| u.starts_with("/a")), "{listed:?}");
    assert_eq!(urls(&changed, &["blog/x.html", "blog/y.html"], true), ["/blog/*"]);
}

use super::top::default_state_dir;
use super::values::interpolate;
use super::*;

fn env(k: &str) -> Option<String> {
    match k {
        "KEY" => Some("sekrit-key".into()),
        "HOME" => Some("/home/u".into()),
        _ => None,
    }
}

fn site() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("public")).unwrap();
    dir
}

fn try_load(dir: &Path, text: &str, dry_run: bool) -> Result<Loaded, ConfigError> {
    load_str(
        &dir.join("rules.yaml"),
        text,
        LoadOptions {
            dry_run,
            ..Default::default()
        },
        &env,
    )
}

fn errors(dir: &Path, text: &str) -> Vec<String> {
    match try_load(dir, text, false) {
        Ok(_) => panic!("expected errors"),
        Err(ConfigError::Invalid(d)) => d.iter().map(|d| d.to_string()).collect(),
        Err(e) => panic!("{e}"),
    }
}

const GOOD: &str = r#"
defaults:
  debounce: 500ms
targets:
  www:
    type: sitehost
    api_key: ${KEY}
    client_id: 12345
    server: ch-server1
    stack: mystack
  cdn:
    type: vims
    token: sk_live_x
    cdn_id: 7
    debounce: 5s
rules:
  - name: site
    watch: public
    targets: [www, cdn]
    include: ["**/*.html"]
    exclude: ["**/*.tmp"]
    match: ['^blog/']
    url_prefix: blog
"#;

#[test]
fn loads_a_good_file() {
    let dir = site();
    let loaded = try_load(dir.path(), GOOD, false).unwrap();
    let c = loaded.config;
    assert_eq!(c.targets.len(), 2);
    let www = c.target("www").unwrap();
    assert_eq!(www.debounce, Duration::from_millis(500));
    assert_eq!(www.max_delay, Duration::from_secs(30));
    let TargetKind::SiteHost(sh) = &www.kind else { panic!() };
    assert_eq!(sh.api_key.expose(), "sekrit-key");
    assert_eq!(sh.api_url, SITEHOST_API_URL);
    assert_eq!(sh.client_id, "12345");
    let cdn = c.target("cdn").unwrap();
    assert_eq!(cdn.debounce, Duration::from_secs(5));
    let TargetKind::Vims(v) = &cdn.kind else { panic!() };
    assert_eq!(v.host, "all");
    assert_eq!(v.cdn_id, "7");
    let rule = c.rule("site").unwrap();
    assert_eq!(rule.watch, dir.path().join("public"));
    assert_eq!(rule.url_prefix, "/blog/");
    assert_eq!(rule.index_files, vec!["index.html".to_string()]);
    assert_eq!(c.state_dir, PathBuf::from("/home/u/.local/state/purgewatch"));
}

#[test]
fn every_error_is_reported_with_its_position() {
    let dir = site();
    let text = r#"targets:
  cdn:
    type: vims
    token: t
    cdn_id: 7
    debounse: 2s
rules:
  - name: site
    watch: public
    targets: [cnd]
    include: ["a/[b"]
    match: ['(']
  - name: other
    watch: missing-dir
    targets: [cdn]
    purge: sometimes
"#;
    let errs = errors(dir.path(), text);
    let joined = errs.join("\n");
    assert!(
        joined.contains("rules.yaml:6:5: target \"cdn\": unknown key `debounse` (did you mean \"debounce\"?)"),
        "{joined}"
    );
    assert!(
        joined.contains("rules.yaml:10:15: rule \"site\": unknown target \"cnd\" (did you mean \"cdn\"?)"),
        "{joined}"
    );
    assert!(
        joined.contains("rules.yaml:11:15: rule \"site\": include: bad glob"),
        "{joined}"
    );
    assert!(
        joined.contains("rules.yaml:12:13: rule \"site\": match: bad regex"),
        "{joined}"
    );
    assert!(
        joined.contains("rules.yaml:14:12: rule \"other\": watch: directory"),
        "{joined}"
    );
    assert!(
        joined.contains("rules.yaml:16:12: rule \"other\": purge: `sometimes` must be"),
        "{joined}"
    );
    assert_eq!(errs.len(), 6, "{joined}");
}

#[test]
fn duplicates_are_errors() {
    let dir = site();
    let text = "targets:\n  a:\n    type: vims\n    token: t\n    cdn_id: 1\n  a:\n    type: vims\n    token: t\n    cdn_id: 2\nrules:\n  - name: r\n    watch: public\n    targets: [a]\n  - name: r\n    watch: public\n    targets: [a]\n";
    let errs = errors(dir.path(), text).join("\n");
    assert!(errs.contains("rules.yaml:6:3: target \"a\" is defined twice"), "{errs}");
    assert!(errs.contains("rules.yaml:14:11: rule \"r\" is defined twice"), "{errs}");
}

#[test]
fn unset_variable_and_missing_secret_file() {
    let dir = site();
    let text = "targets:\n  a:\n    type: sitehost\n    api_key: ${NOPE}\n    client_id: 1\n    server: s\n    stack: x\n  b:\n    type: vims\n    token_file: /nonexistent/token\n    cdn_id: 1\nrules:\n  - name: r\n    watch: public\n    targets: [a, b]\n";
    let errs = errors(dir.path(), text).join("\n");
    assert!(
        errs.contains("rules.yaml:4:14: target \"a\": api_key: environment variable `NOPE` is not set"),
        "{errs}"
    );
    assert!(
        errs.contains("rules.yaml:10:17: target \"b\": cannot read token_file /nonexistent/token"),
        "{errs}"
    );
    // --dry-run needs no credentials: both become warnings.
    let loaded = try_load(dir.path(), text, true).unwrap();
    assert_eq!(loaded.warnings.len(), 2, "{:?}", loaded.warnings);
}

#[test]
fn secret_file_is_trimmed() {
    let dir = site();
    std::fs::write(dir.path().join("tok"), "sk_live_abc\n").unwrap();
    let text = "targets:\n  b:\n    type: vims\n    token_file: tok\n    cdn_id: 1\nrules:\n  - name: r\n    watch: public\n    targets: [b]\n";
    let c = try_load(dir.path(), text, false).unwrap().config;
    let TargetKind::Vims(v) = &c.target("b").unwrap().kind else {
        panic!()
    };
    assert_eq!(v.token.expose(), "sk_live_abc");
}

#[test]
fn bad_duration_suggests_a_unit() {
    let dir = site();
    let text = "defaults:\n  debounce: 2\ntargets:\n  b:\n    type: vims\n    token: t\n    cdn_id: 1\nrules:\n  - name: r\n    watch: public\n    targets: [b]\n";
    let errs = errors(dir.path(), text).join("\n");
    assert!(
        errs.contains("rules.yaml:2:13: defaults: debounce: `2` is not a duration"),
        "{errs}"
    );
    assert!(errs.contains("add a unit"), "{errs}");
}

#[test]
fn syntax_error_is_positioned() {
    let dir = site();
    let errs = errors(dir.path(), "targets: [a\nrules: x\n").join("\n");
    assert!(
        errs.starts_with(&format!("{}:", dir.path().join("rules.yaml").display())),
        "{errs}"
    );
    assert!(errs.contains("YAML syntax error"), "{errs}");
}

#[test]
fn interpolation() {
    assert_eq!(interpolate("a${KEY}b$$c$d", &env).unwrap(), "asekrit-keyb$c$d");
    assert_eq!(interpolate("${MISSING}", &env).unwrap_err(), "MISSING");
}

#[test]
fn state_dir_defaults() {
    let e = |k: &str| (k == "STATE_DIRECTORY").then(|| "/var/lib/purgewatch:/other".to_string());
    assert_eq!(default_state_dir(&e), Some(PathBuf::from("/var/lib/purgewatch")));
    let e = |k: &str| (k == "XDG_STATE_HOME").then(|| "/x".to_string());
    assert_eq!(default_state_dir(&e), Some(PathBuf::from("/x/purgewatch")));
}

#[test]
fn every_problem_is_reported_once_in_file_order() {
    let dir = site();
    // Target "b" has an error of its own; the second rule "r" has one besides its name.
    let text = "targets:\n  a:\n    type: vims\n    token: t\n    cdn_id: 1\n  b:\n    type: vims\n    token: t\n    cdn_id: 2\n    debunce: 1s\nrules:\n  - name: r\n    watch: public\n    targets: [a, b]\n  - name: r\n    watch: nothere\n    targets: [a]\n";
    let errs = errors(dir.path(), text);
    let all = errs.join("\n");
    assert!(
        all.contains("rules.yaml:10:5: target \"b\": unknown key `debunce`"),
        "{all}"
    );
    assert!(
        !all.contains("unknown target \"b\""),
        "b is declared, only invalid:\n{all}"
    );
    assert!(all.contains("rules.yaml:15:11: rule \"r\" is defined twice"), "{all}");
    assert!(all.contains("rules.yaml:16:12: rule \"r\": watch: directory"), "{all}");
    assert_eq!(errs.len(), 3, "{all}");
    let positions: Vec<(usize, usize)> = errs
        .iter()
        .map(|e| {
            let mut it = e.split(':').skip(1).map(|n| n.parse::<usize>().unwrap());
            (it.next().unwrap(), it.next().unwrap())
        })
        .collect();
    assert!(positions.windows(2).all(|w| w[0] <= w[1]), "{all}");
}

/// A command typed by hand reads `${CREDENTIALS_DIRECTORY}` as the directory the shipped unit
/// loads credentials from, when the variable is unset and the directory exists; the variable
/// wins when set, and nothing else is touched.
#[test]
fn credentials_directory_falls_back_to_the_packaged_one() {
    let dir = tempfile::tempdir().unwrap();
    let unset = |_: &str| None;
    let set = |k: &str| (k == "CREDENTIALS_DIRECTORY").then(|| "/run/credentials/x".to_string());
    assert_eq!(
        with_credentials_fallback("CREDENTIALS_DIRECTORY", &unset, dir.path()),
        Some(dir.path().display().to_string())
    );
    assert_eq!(
        with_credentials_fallback("CREDENTIALS_DIRECTORY", &set, dir.path()),
        Some("/run/credentials/x".into())
    );
    assert_eq!(with_credentials_fallback("HOME", &unset, dir.path()), None);
    assert_eq!(
        with_credentials_fallback("CREDENTIALS_DIRECTORY", &unset, &dir.path().join("none")),
        None
    );
}

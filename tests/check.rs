//! `purgewatch check`: every error with its position, exit 2; `--remote` against the fake.

mod common;

use common::*;

#[test]
fn a_broken_file_lists_every_error_with_positions_and_exits_2() {
    let site = Site::new();
    let fake = Fake::start();
    let rules = site
        .rules_for(
            &fake,
            "2s",
            "    include: [\"a/[b\"]\n  - name: site\n    watch: nowhere\n    targets: [cnd]\n",
        )
        .replace("  max_delay: 30s", "  max_delay: soon");
    site.write_rules(&rules);
    let (code, _out, err) = site.run(&["check"]);
    assert_eq!(code, 2, "{err}");
    let line_of = |needle: &str| rules.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let expect = [
        format!(
            "rules.yaml:{}:14: defaults: max_delay: `soon` is not a duration",
            line_of("max_delay: soon")
        ),
        format!(
            "rules.yaml:{}:15: rule \"site\": include: bad glob `a/[b`",
            line_of("a/[b")
        ),
        format!("rules.yaml:{}:12: rule \"site\": watch: directory", line_of("nowhere")),
        format!(
            "rules.yaml:{}:15: rule \"site\": unknown target \"cnd\" (did you mean \"cdn\"?)",
            line_of("[cnd]")
        ),
    ];
    for e in &expect {
        assert!(err.contains(e.as_str()), "missing {e:?} in:\n{err}");
    }
}

#[test]
fn unknown_keys_and_unset_variables_are_errors() {
    let site = Site::new();
    let fake = Fake::start();
    site.write_rules(&site.rules_for(&fake, "2s", "    exclud: [\"x\"]\n"));
    let out = std::process::Command::new(bin())
        .args(["check", "-c"])
        .arg(&site.rules)
        .env_remove("PW_TEST_SITEHOST_KEY")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("unknown key `exclud` (did you mean \"exclude\"?)"),
        "{err}"
    );
    assert!(
        err.contains("environment variable `PW_TEST_SITEHOST_KEY` is not set"),
        "{err}"
    );
}

#[test]
fn a_good_file_passes_and_remote_checks_ask_the_providers() {
    let site = Site::new();
    let fake = Fake::start();
    site.write_rules(&site.rules_for(&fake, "2s", ""));
    let (code, out, err) = site.run(&["check"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok (2 targets, 1 rule)"), "{out}");
    assert!(fake.requests().is_empty(), "plain check asks nobody");

    let (code, out, err) = site.run(&["check", "--remote"]);
    assert_eq!(code, 0, "{out}{err}");
    let get = &fake.requests_to(Route::SiteHostGet)[0];
    let q = get.query_pairs();
    assert!(
        q.contains(&("client_id".into(), "12345".into())) && q.contains(&("name".into(), "mystack".into())),
        "{q:?}"
    );
    assert_eq!(
        fake.requests_to(Route::VimsList)[0].headers["authorization"],
        "sk_live_testtoken"
    );
}

#[test]
fn remote_check_names_the_target_the_provider_refused() {
    let site = Site::new();
    let fake = Fake::start();
    site.write_rules(&site.rules_for(&fake, "2s", "").replace("host: all", "host: 99"));
    fake.script(
        Route::SiteHostGet,
        vec![Reply::json(
            200,
            serde_json::json!({"status": false, "msg": "Invalid API key"}),
        )],
    );
    let (code, out, err) = site.run(&["check", "--remote"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("target \"www\" (sitehost)") && err.contains("Invalid API key"),
        "{err}"
    );
    assert!(
        err.contains("target \"cdn\" (vims)") && err.contains("no host 99"),
        "{err}"
    );
    assert!(!err.contains("sh-secret-key-123"), "secret leaked: {err}");
}

#[test]
fn a_missing_rules_file_is_a_usage_error() {
    let out = std::process::Command::new(bin())
        .args(["check", "-c", "/nonexistent/rules.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/rules.yaml: cannot read the rules file"),
        "{err}"
    );
    // What the OS said, once, and how to point at another file.
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert!(err.contains("-c FILE"), "{err}");
}

/// A command that uses one target does not need the others' secrets: `purge cdn` goes out with
/// a warning about `www`; `purge www` is refused (2) naming what is missing; `check --remote`
/// asks the targets it can and still exits 2 for the one it cannot.
#[test]
fn an_unrelated_targets_missing_secret_is_a_warning_for_commands_that_do_not_use_it() {
    let fake = Fake::start();
    let site = Site::new();
    site.write("index.html", "home");
    let rules = site
        .rules_for(&fake, "2s", "")
        .replace("${PW_TEST_SITEHOST_KEY}", "${PW_TEST_NOT_SET_ANYWHERE}");
    site.write_rules(&rules);
    let (code, out, err) = site.run(&["purge", "cdn", "--all"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("PW_TEST_NOT_SET_ANYWHERE") && err.contains("not used by this command"),
        "{err}"
    );
    assert_eq!(fake.vims_purges().len(), 1);
    let (code, _, err) = site.run(&["purge", "cdn", "--all", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        err.matches("PW_TEST_NOT_SET_ANYWHERE").count(),
        1,
        "each warning once:\n{err}"
    );
    let (code, _, err) = site.run(&["purge", "www", "--all"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("PW_TEST_NOT_SET_ANYWHERE") && err.contains("rules.yaml:"),
        "{err}"
    );
    assert!(fake.requests_to(Route::SiteHostPurge).is_empty());
    let (code, out, err) = site.run(&["check", "--remote"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.contains("target \"cdn\" (vims): ok"), "{out}{err}");
    assert!(err.contains("PW_TEST_NOT_SET_ANYWHERE"), "{err}");
    // Plain `check` still refuses the file.
    let (code, _, err) = site.run(&["check"]);
    assert_eq!(code, 2, "{err}");
}

/// `status` only reads the state: it works while the watched directory is missing.
#[test]
fn status_works_while_the_watched_directory_is_missing() {
    let fake = Fake::start();
    let site = Site::new();
    site.write_rules(&site.rules_for(&fake, "2s", ""));
    std::fs::remove_dir_all(&site.root).unwrap();
    let (code, out, err) = site.run(&["status"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&site.state.display().to_string()),
        "names the state directory it read: {out}"
    );
    assert!(err.contains("does not exist"), "{err}");
    let (code, out, err) = site.run(&["status", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok(), "{out}");
}

#[test]
fn a_target_no_rule_uses_is_a_warning() {
    let fake = Fake::start();
    let site = Site::new();
    let rules = site
        .rules_for(&fake, "2s", "")
        .replace("targets: [www, cdn]", "targets: [cdn]");
    site.write_rules(&rules);
    let (code, _, err) = site.run(&["check"]);
    assert_eq!(code, 0, "{err}");
    let line = rules.lines().position(|l| l.trim() == "www:").unwrap() + 1;
    assert!(
        err.contains(&format!("rules.yaml:{line}:3: target \"www\" is not used by any rule")),
        "{err}"
    );
}

/// A tab in the indentation is reported on its own line and column, with what to do.
#[test]
fn a_tab_in_the_indentation_is_reported_where_it_is() {
    let fake = Fake::start();
    let site = Site::new();
    let rules = site
        .rules_for(&fake, "2s", "")
        .replace("    targets: [www, cdn]", "\ttargets: [www, cdn]");
    site.write_rules(&rules);
    let (code, _, err) = site.run(&["check"]);
    assert_eq!(code, 2, "{err}");
    let line = rules.lines().position(|l| l.starts_with('\t')).unwrap() + 1;
    assert!(err.contains(&format!("rules.yaml:{line}:1:")), "{err}");
    assert!(err.contains("indent with spaces"), "{err}");
}

/// A rules file the user may not read (the packaged one is root's, 0640): the message says to
/// use sudo.
#[test]
fn an_unreadable_rules_file_suggests_sudo() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, "targets: {}\n").unwrap();
    std::fs::set_permissions(&rules, std::fs::Permissions::from_mode(0o000)).unwrap();
    let binary = dir.path().join("purgewatch");
    std::fs::copy(bin(), &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = std::process::Command::new(&binary);
    cmd.args(["check", "-c"]).arg(&rules);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // Root reads anything: run as nobody, as a person without root would.
        cmd.uid(65534).gid(65534);
    }
    let out = unless_busy(|| cmd.output()).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cannot read the rules file") && err.contains("sudo"),
        "{err}"
    );
}

/// `base_url` on a rule: scheme://host[:port] only; it is `verify.base_url`'s default.
#[test]
fn a_rules_base_url_is_checked_and_is_the_default_for_verify() {
    let fake = Fake::start();
    let site = Site::new();
    let with = |extra: &str| site.rules_for(&fake, "2s", extra);
    site.write_rules(&with("    base_url: https://www.example.com/blog\n"));
    let (code, _, err) = site.run(&["check"]);
    assert_eq!(code, 2, "{err}");
    let rules = with("    base_url: https://www.example.com/blog\n");
    let line = rules.lines().position(|l| l.contains("base_url:")).unwrap() + 1;
    assert!(
        err.contains(&format!("rules.yaml:{line}:15: rule \"site\": base_url:")),
        "{err}"
    );
    assert!(err.contains("url_prefix"), "{err}");
    site.write_rules(&with(
        "    base_url: https://www.example.com\n    verify:\n      sample: 5\n",
    ));
    let (code, _, err) = site.run(&["check"]);
    assert_eq!(code, 0, "{err}");
    site.write_rules(&with("    verify:\n      sample: 5\n"));
    let (code, _, err) = site.run(&["check"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("verify: missing `base_url:`"), "{err}");
}

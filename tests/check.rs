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

//! Reload: SIGHUP or a save of the rules file; a broken file keeps the old rules.

mod common;

use common::*;

fn running(fake: &Fake) -> (Site, Daemon) {
    let site = Site::new();
    site.write("index.html", "home");
    std::fs::create_dir_all(site.path("docs")).unwrap();
    std::fs::write(site.path("docs/guide.html"), "guide").unwrap();
    site.write_rules(&site.rules_for(fake, "200ms", ""));
    let d = site.start(&["run"]);
    d.wait_ready();
    (site, d)
}

fn with_docs_rule(site: &Site, fake: &Fake) -> String {
    site.rules_for(
        fake,
        "200ms",
        "  - name: docs\n    watch: docs\n    targets: [cdn]\n    url_prefix: /docs/\n",
    )
}

#[test]
fn sighup_with_a_new_rule_watches_its_directory() {
    let fake = Fake::start();
    let (site, d) = running(&fake);
    site.write_rules(&with_docs_rule(&site, &fake));
    d.signal("HUP");
    d.wait_for("reloaded");
    std::fs::write(site.path("docs/guide.html"), "guide v2").unwrap();
    let vims = wait_requests(&fake, Route::VimsPurge, 1, &d);
    assert!(
        pattern_matches(&vims[0].pattern(), "/docs/guide.html"),
        "{}",
        vims[0].pattern()
    );
    // Only the VIMS target is on the new rule.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(fake.sitehost_purges().is_empty(), "{}", d.log());
}

#[test]
fn sighup_with_a_broken_file_keeps_the_old_rules() {
    let fake = Fake::start();
    let (site, d) = running(&fake);
    let good = std::fs::read_to_string(&site.rules).unwrap();
    site.write_rules(&good.replace("targets: [www, cdn]", "targets: [www, cnd]"));
    d.signal("HUP");
    d.wait_for("current rules stay in force");
    let err = d.lines_containing("current rules stay in force").join("\n");
    assert!(
        err.contains("rules.yaml:") && err.contains("unknown target \"cnd\""),
        "{err}"
    );
    // The old rules still work.
    site.write("index.html", "home v2");
    wait_requests(&fake, Route::SiteHostPurge, 1, &d);
    wait_requests(&fake, Route::VimsPurge, 1, &d);
}

#[test]
fn saving_the_rules_file_reloads_it() {
    let fake = Fake::start();
    let (site, d) = running(&fake);
    // Editors save by writing a temp file and renaming it over the original.
    let tmp = site.path(".rules.yaml.swp");
    std::fs::write(&tmp, with_docs_rule(&site, &fake)).unwrap();
    std::fs::rename(&tmp, &site.rules).unwrap();
    d.wait_for("reloaded");
    std::fs::write(site.path("docs/guide.html"), "guide v3").unwrap();
    let vims = wait_requests(&fake, Route::VimsPurge, 1, &d);
    assert!(pattern_matches(&vims[0].pattern(), "/docs/guide.html"));
}

#[test]
fn a_removed_rule_is_no_longer_watched() {
    let fake = Fake::start();
    let site = Site::new();
    site.write("index.html", "home");
    std::fs::create_dir_all(site.path("docs")).unwrap();
    site.write_rules(&with_docs_rule(&site, &fake));
    let d = site.start(&["run"]);
    d.wait_ready();
    site.write_rules(&site.rules_for(&fake, "200ms", ""));
    d.signal("HUP");
    d.wait_for("reloaded");
    std::fs::write(site.path("docs/new.html"), "x").unwrap();
    site.write("index.html", "home v2");
    let vims = wait_requests(&fake, Route::VimsPurge, 1, &d);
    assert!(
        !pattern_matches(&vims[0].pattern(), "/docs/new.html"),
        "{}",
        vims[0].pattern()
    );
    assert!(pattern_matches(&vims[0].pattern(), "/index.html"));
}

/// A rules file that is a symlink (to a file kept elsewhere) is reloaded when its target is saved.
#[test]
fn a_symlinked_rules_file_is_reloaded_on_a_save_of_its_target() {
    let fake = Fake::start();
    let site = Site::new();
    site.write("index.html", "home");
    let elsewhere = tempfile::tempdir().unwrap();
    let real = elsewhere.path().join("real-rules.yaml");
    let rules = site
        .rules_for(&fake, "200ms", "")
        .replace("watch: public", &format!("watch: {}", site.root.display()));
    std::fs::write(&real, &rules).unwrap();
    std::os::unix::fs::symlink(&real, &site.rules).unwrap();
    let d = site.start(&["run"]);
    d.wait_ready();
    std::fs::write(&real, rules.replace("debounce: 200ms", "debounce: 300ms")).unwrap();
    d.wait_for("reloaded");
}

/// A reload that names another state_dir: it takes effect at the next start; meanwhile no second
/// daemon can start on it, and `status` says where the state is.
#[test]
fn a_reload_that_moves_state_dir_holds_the_new_one_and_status_says_where_the_state_is() {
    let fake = Fake::start();
    let (site, d) = running(&fake);
    let old = site.state.display().to_string();
    let moved = site.path("state2");
    let rules = std::fs::read_to_string(&site.rules)
        .unwrap()
        .replace(&old, &moved.display().to_string());
    site.write_rules(&rules);
    d.wait_for("takes effect at the next start");
    d.wait_for("reloaded");
    let mut second = site.start(&["run"]);
    assert_eq!(second.wait_exit(), 1, "{}", second.log());
    assert!(second.log().contains(&moved.display().to_string()), "{}", second.log());
    let (code, out, err) = site.run(&["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("keeps its state in {old}")), "{out}");
}

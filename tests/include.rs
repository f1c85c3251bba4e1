//! `include:`: one rules file per site on a host that serves many. Names are unique across
//! files, a rule may name a target of any file; `check` names each file's errors; at a reload a
//! broken file is refused alone (its previous version stays) while the others take effect.

mod common;

use common::*;

/// A site with `include: [rules.d/*.yaml]`: the main file holds the targets, each site's rule is
/// a file of its own in rules.d, watching `sites/NAME`.
fn host(fake: &Fake) -> Site {
    let site = Site::new();
    let main = site.rules_for(fake, "200ms", "");
    let (head, _) = main.split_once("rules:\n").unwrap();
    site.write_rules(&format!("include: [rules.d/*.yaml]\n{head}"));
    std::fs::create_dir_all(site.path("rules.d")).unwrap();
    site
}

fn site_file(site: &Site, name: &str) {
    let tree = site.path(&format!("sites/{name}"));
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("index.html"), format!("{name} home")).unwrap();
    std::fs::write(
        site.path(&format!("rules.d/{name}.yaml")),
        format!("rules:\n  - name: {name}\n    watch: ../sites/{name}\n    targets: [cdn]\n    url_prefix: /{name}/\n"),
    )
    .unwrap();
}

#[test]
fn check_validates_every_file_and_names_each() {
    let fake = Fake::start();
    let site = host(&fake);
    site_file(&site, "alpha");
    site_file(&site, "beta");
    let (code, out, err) = site.run(&["check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 rules"), "{out}");
    // An error in one file, and a name defined in two files: each named with its file.
    std::fs::write(
        site.path("rules.d/beta.yaml"),
        "rules:\n  - name: beta\n    watch: ../sites/beta\n    targets: [cnd]\n",
    )
    .unwrap();
    std::fs::write(
        site.path("rules.d/gamma.yaml"),
        "targets:\n  www:\n    type: vims\n    token: t0ken-x\n    cdn_id: 1\nrules:\n  - name: alpha\n    watch: ../sites/beta\n    targets: [www]\n",
    )
    .unwrap();
    let (code, _, err) = site.run(&["check"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("rules.d/beta.yaml:4:15: rule \"beta\": unknown target \"cnd\""),
        "{err}"
    );
    assert!(
        err.contains("rules.d/gamma.yaml:2:3: target \"www\" is defined twice (also in"),
        "{err}"
    );
    assert!(
        err.contains("rules.d/gamma.yaml:7:11: rule \"alpha\" is defined twice (also in"),
        "{err}"
    );
    // An included file holds targets and rules only.
    std::fs::remove_file(site.path("rules.d/gamma.yaml")).unwrap();
    site_file(&site, "beta");
    std::fs::write(site.path("rules.d/delta.yaml"), "state_dir: /tmp/x\n").unwrap();
    let (code, _, err) = site.run(&["check"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("rules.d/delta.yaml:1:1:") && err.contains("unknown key `state_dir`"),
        "{err}"
    );
}

#[test]
fn each_file_takes_effect_on_its_own_and_a_broken_one_keeps_its_previous_version() {
    let fake = Fake::start();
    let site = host(&fake);
    site_file(&site, "alpha");
    site_file(&site, "beta");
    let d = site.start(&["run"]);
    d.wait_ready();
    let purged = |n: usize, url: &str| {
        let vims = wait_requests(&fake, Route::VimsPurge, n, &d);
        assert!(
            pattern_matches(&vims[n - 1].pattern(), url),
            "{url}: {}\n{}",
            vims[n - 1].pattern(),
            d.log()
        );
    };
    std::fs::write(site.path("sites/alpha/index.html"), "alpha v2").unwrap();
    purged(1, "/alpha/index.html");

    // beta's file broken: refused alone, with its position; its rule keeps working.
    std::fs::write(
        site.path("rules.d/beta.yaml"),
        "rules:\n  - name: beta\n    watch: ../sites/beta\n    targets: [nope]\n",
    )
    .unwrap();
    d.wait_for("previous version stays in force");
    assert!(d.log().contains("rules.d/beta.yaml:4:15"), "{}", d.log());
    std::fs::write(site.path("sites/beta/index.html"), "beta v2").unwrap();
    purged(2, "/beta/index.html");

    // A new file is added and takes effect; a new broken file is not added.
    site_file(&site, "gamma");
    std::fs::write(site.path("rules.d/zeta.yaml"), "rules: [oops\n").unwrap();
    d.wait_for("rules.d/zeta.yaml:2:1: YAML syntax error");
    d.wait_for("rule=gamma");
    std::fs::write(site.path("sites/gamma/index.html"), "gamma v2").unwrap();
    purged(3, "/gamma/index.html");

    // A file removed: its rule goes.
    let reloads = d.lines_containing("reloaded").len();
    std::fs::remove_file(site.path("rules.d/alpha.yaml")).unwrap();
    d.wait_for_lines("reloaded", reloads + 1);
    let n = fake.vims_purges().len();
    std::fs::write(site.path("sites/alpha/index.html"), "alpha v3").unwrap();
    std::fs::write(site.path("sites/gamma/index.html"), "gamma v3").unwrap();
    purged(n + 1, "/gamma/index.html");
    std::thread::sleep(std::time::Duration::from_millis(800));
    let all: Vec<String> = fake.vims_purges().iter().map(|r| r.pattern()).collect();
    assert!(
        !all[n..].iter().any(|p| pattern_matches(p, "/alpha/index.html")),
        "{all:?}"
    );
}

/// An include directory that does not exist yet when the daemon starts: making it and adding
/// a site's file takes effect like any other save, with no SIGHUP (its nearest parent is
/// watched until it appears).
#[test]
fn an_include_directory_made_after_start_takes_effect() {
    let fake = Fake::start();
    let site = host(&fake);
    std::fs::remove_dir(site.path("rules.d")).unwrap();
    site.write_rules(
        &std::fs::read_to_string(&site.rules)
            .unwrap()
            .replace("rules.d/*.yaml", "conf/rules.d/*.yaml"),
    );
    let d = site.start(&["run"]);
    d.wait_ready();
    // Two levels made, then the file: each step is seen.
    std::fs::create_dir_all(site.path("conf/rules.d")).unwrap();
    let tree = site.path("sites/alpha");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("index.html"), "alpha home").unwrap();
    std::fs::write(
        site.path("conf/rules.d/alpha.yaml"),
        "rules:\n  - name: alpha\n    watch: ../../sites/alpha\n    targets: [cdn]\n    url_prefix: /alpha/\n",
    )
    .unwrap();
    if !wait_until(DEADLINE, || {
        d.lines_containing("reloaded").iter().any(|l| l.contains("1 rule"))
    }) {
        panic!("{}", d.log());
    }
    std::fs::write(tree.join("index.html"), "alpha v2").unwrap();
    let vims = wait_requests(&fake, Route::VimsPurge, 1, &d);
    assert!(
        pattern_matches(&vims[0].pattern(), "/alpha/index.html"),
        "{}",
        vims[0].pattern()
    );
}

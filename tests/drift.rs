//! The daemon's record never drifts from the disk: deploys that empty the tree and fill it again
//! within one debounce, in directories re-made faster than their watches can be added, purge
//! exactly what changed; afterwards `plan` is empty and a restart sends nothing.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

/// 1,200 files nested 4 deep: `s{0..3}/a{0..4}/b{0..4}/p{0..11}.html`.
fn files() -> Vec<String> {
    let mut out = Vec::new();
    for s in 0..4 {
        for a in 0..5 {
            for b in 0..5 {
                for p in 0..12 {
                    out.push(format!("s{s}/a{a}/b{b}/p{p}.html"));
                }
            }
        }
    }
    out
}

fn content(rel: &str, changed: &BTreeSet<&str>) -> String {
    if changed.contains(rel) {
        format!("<p>{rel} v2</p>")
    } else {
        format!("<p>{rel}</p>")
    }
}

/// Writes `paths` under `root` from 8 threads at once, creating directories as they go.
fn write_in_parallel(root: &Path, paths: &[String], changed: &BTreeSet<&str>) {
    std::thread::scope(|scope| {
        for chunk in paths.chunks(paths.len().div_ceil(8)) {
            scope.spawn(move || {
                for rel in chunk {
                    let p = root.join(rel);
                    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                    std::fs::write(p, content(rel, changed)).unwrap();
                }
            });
        }
    });
}

fn running(fake: &Fake, paths: &[String]) -> (Site, Daemon) {
    let site = Site::new();
    write_in_parallel(&site.root, paths, &BTreeSet::new());
    site.write_rules(&site.rules_for(fake, "1s", ""));
    let d = site.start(&["run"]);
    d.wait_ready();
    (site, d)
}

/// Waits for the batch, then checks that the VIMS patterns purge exactly `changed` among
/// `all` (no more, no fewer) and that one SiteHost purge went out.
fn assert_purged_exactly(fake: &Fake, d: &Daemon, all: &[String], changed: &[String]) {
    wait_requests(fake, Route::SiteHostPurge, 1, d);
    let vims = wait_requests(fake, Route::VimsPurge, 1, d);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(fake.sitehost_purges().len(), 1, "{}", d.log());
    let patterns: Vec<String> = fake.vims_purges().iter().map(|r| r.pattern()).collect();
    assert!(vims.len() <= patterns.len());
    let hit = |url: &str| patterns.iter().any(|p| pattern_matches(p, url));
    let wrong: Vec<&String> = all
        .iter()
        .filter(|p| hit(&format!("/{p}")) != changed.contains(p))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} URLs purged wrongly or missed (first: {:?}); patterns {patterns:?}\n{}",
        wrong.len(),
        wrong.iter().take(5).collect::<Vec<_>>(),
        d.log()
            .lines()
            .filter(|l| l.contains("purged") || l.contains("WARN"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn every_file_and_directory_deleted_and_written_back_at_once_purges_only_what_changed() {
    let fake = Fake::start();
    let all = files();
    let (site, d) = running(&fake, &all);
    let changed: BTreeSet<&str> = ["s0/a0/b0/p0.html", "s1/a2/b3/p4.html", "s3/a4/b4/p11.html"].into();
    // As `hugo --cleanDestinationDir` does: empty the tree, then write it all back.
    for entry in std::fs::read_dir(&site.root).unwrap() {
        std::fs::remove_dir_all(entry.unwrap().path()).unwrap();
    }
    write_in_parallel(&site.root, &all, &changed);
    let changed_list: Vec<String> = changed.iter().map(|s| s.to_string()).collect();
    assert_purged_exactly(&fake, &d, &all, &changed_list);
    assert_plan_empty(&site);
    restart_sends_nothing(&site, &fake, d);
}

#[test]
fn a_section_removed_and_made_again_purges_only_what_changed() {
    let fake = Fake::start();
    let all = files();
    let (site, d) = running(&fake, &all);
    std::fs::remove_dir_all(site.root.join("s2")).unwrap();
    let changed: BTreeSet<&str> = ["s2/a1/b1/p1.html", "s2/a4/b0/p7.html"].into();
    let section: Vec<String> = all.iter().filter(|p| p.starts_with("s2/")).cloned().collect();
    write_in_parallel(&site.root, &section, &changed);
    let changed_list: Vec<String> = changed.iter().map(|s| s.to_string()).collect();
    assert_purged_exactly(&fake, &d, &all, &changed_list);
    assert_plan_empty(&site);
    restart_sends_nothing(&site, &fake, d);
}

#[test]
fn new_nested_directories_written_the_instant_they_exist_are_all_purged() {
    let fake = Fake::start();
    let all = files();
    let (site, d) = running(&fake, &all);
    let new: Vec<String> = (0..300).map(|i| format!("new/n{i}/deep/er/page.html")).collect();
    write_in_parallel(&site.root, &new, &BTreeSet::new());
    let mut everything = all.clone();
    everything.extend(new.iter().cloned());
    assert_purged_exactly(&fake, &d, &everything, &new);
    assert_plan_empty(&site);
    restart_sends_nothing(&site, &fake, d);
}

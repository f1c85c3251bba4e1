//! Deploys that replace the tree at once: a directory renamed into place, a symlink re-pointed.
//! Exactly the files that differ are purged.

mod common;

use common::*;
use std::path::Path;

fn release(dir: &Path, post: &str) {
    for (rel, content) in [
        ("index.html", "home"),
        ("blog/post.html", post),
        ("blog/same.html", "same"),
        ("css/site.css", "body{}"),
    ] {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
}

/// A site whose `public` holds release "post v1", and the daemon ready on it (debounce 1 s: a
/// release written in place takes a few milliseconds, and on a loaded machine the kernel's
/// events for it may reach the daemon late; the batch must not fall due before they are read).
fn running_on_v1(fake: &Fake) -> (Site, Daemon) {
    let site = Site::new();
    release(&site.root, "post v1");
    site.write_rules(&site.rules_for(fake, "1s", ""));
    let d = site.start(&["run"]);
    d.wait_ready();
    (site, d)
}

fn assert_exact(fake: &Fake, d: &Daemon, changed: &[&str], unchanged: &[&str]) {
    let vims = wait_requests(fake, Route::VimsPurge, 1, d);
    let p = vims[0].pattern();
    for url in changed {
        assert!(pattern_matches(&p, url), "{url} not purged by {p}\n{}", d.log());
    }
    for url in unchanged {
        assert!(!pattern_matches(&p, url), "{url} purged by {p}");
    }
    wait_requests(fake, Route::SiteHostPurge, 1, d);
    std::thread::sleep(std::time::Duration::from_millis(800));
    assert_eq!(fake.vims_purges().len(), 1, "{}", d.log());
}

/// After a swap's purge: an edit in the new tree is seen and purged (the second VIMS request).
fn assert_new_tree_watched(site: &Site, fake: &Fake, d: &Daemon) {
    site.write("blog/same.html", "changed now");
    let vims = wait_requests(fake, Route::VimsPurge, 2, d);
    assert!(
        pattern_matches(&vims[1].pattern(), "/blog/same.html"),
        "{}",
        vims[1].pattern()
    );
}

#[test]
fn a_directory_renamed_into_place() {
    let fake = Fake::start();
    let (site, d) = running_on_v1(&fake);
    let next = site.path("public.new");
    release(&next, "post v2");
    std::fs::write(next.join("blog/new.html"), "new").unwrap();
    std::fs::rename(&site.root, site.path("public.old")).unwrap();
    std::fs::rename(&next, &site.root).unwrap();
    assert_exact(
        &fake,
        &d,
        &["/blog/post.html", "/blog/new.html"],
        &["/blog/same.html", "/index.html", "/css/site.css"],
    );
    assert_new_tree_watched(&site, &fake, &d);
    assert_plan_empty(&site);
}

#[test]
fn a_symlink_switched_to_a_new_release() {
    let fake = Fake::start();
    let site = Site::new();
    let releases = site.path("releases");
    release(&releases.join("1"), "post v1");
    let current = site.path("current");
    std::os::unix::fs::symlink(releases.join("1"), &current).unwrap();
    site.write_rules(
        &site
            .rules_for(&fake, "300ms", "")
            .replace("watch: public", "watch: current"),
    );
    let d = site.start(&["run"]);
    d.wait_ready();
    release(&releases.join("2"), "post v2");
    std::fs::remove_file(releases.join("2/css/site.css")).unwrap();
    // Atomic switch: a new link renamed over the old one (ln -sfn + mv -T).
    let tmp = site.path("current.tmp");
    std::os::unix::fs::symlink(releases.join("2"), &tmp).unwrap();
    std::fs::rename(&tmp, &current).unwrap();
    assert_exact(
        &fake,
        &d,
        &["/blog/post.html", "/css/site.css"],
        &["/blog/same.html", "/index.html"],
    );
    // Edits in the new release are watched; the old one is not.
    std::fs::write(releases.join("1/index.html"), "old release edited").unwrap();
    std::fs::write(releases.join("2/blog/same.html"), "edited").unwrap();
    let vims = wait_requests(&fake, Route::VimsPurge, 2, &d);
    assert!(
        pattern_matches(&vims[1].pattern(), "/blog/same.html"),
        "{}",
        vims[1].pattern()
    );
    assert!(
        !pattern_matches(&vims[1].pattern(), "/index.html"),
        "{}",
        vims[1].pattern()
    );
    assert_plan_empty(&site);
}

#[test]
fn edits_right_after_a_swap_are_purged_too() {
    // The new tree is listed and hashed while the batch debounces; files changed, added or
    // removed after that listing must still be compared.
    let fake = Fake::start();
    let (site, d) = running_on_v1(&fake);
    let next = site.path("public.new");
    release(&next, "post v1");
    std::fs::rename(&site.root, site.path("public.old")).unwrap();
    std::fs::rename(&next, &site.root).unwrap();
    site.write("css/site.css", "body{color:red}");
    site.write("blog/late.html", "late");
    std::fs::remove_file(site.root.join("index.html")).unwrap();
    let wanted = ["/css/site.css", "/blog/late.html", "/index.html"];
    let covered = |fake: &Fake| {
        let pats: Vec<String> = fake.vims_purges().iter().map(|r| r.pattern()).collect();
        wanted.iter().all(|u| pats.iter().any(|p| pattern_matches(p, u)))
    };
    assert!(
        wait_until(DEADLINE, || covered(&fake)),
        "{:?}\n{}",
        fake.vims_purges(),
        d.log()
    );
    for r in fake.vims_purges() {
        assert!(!pattern_matches(&r.pattern(), "/blog/same.html"), "{}", r.pattern());
        assert!(!pattern_matches(&r.pattern(), "/blog/post.html"), "{}", r.pattern());
    }
    assert_plan_empty(&site);
}

#[test]
fn a_second_swap_within_the_debounce_is_compared_on_its_own() {
    // The first new tree is hashed while the batch debounces; a second one swapped in before
    // the batch goes must be compared as it is, not as the first tree was found.
    let fake = Fake::start();
    let site = Site::new();
    release(&site.root, "post v1");
    site.write_rules(&site.rules_for(&fake, "2s", ""));
    let d = site.start_with(&["run"], &[("RUST_LOG", "purgewatch=debug")]);
    d.wait_ready();
    let swap_in = |name: &str, old: &str| {
        std::fs::rename(&site.root, site.path(old)).unwrap();
        std::fs::rename(site.path(name), &site.root).unwrap();
    };
    release(&site.path("first"), "post v1");
    release(&site.path("second"), "post v1");
    std::fs::write(site.path("second/blog/same.html"), "changed").unwrap();
    std::fs::remove_file(site.path("second/css/site.css")).unwrap();
    swap_in("first", "public.0");
    d.wait_for("hashed the new tree");
    swap_in("second", "public.1");
    assert_exact(
        &fake,
        &d,
        &["/blog/same.html", "/css/site.css"],
        &["/index.html", "/blog/post.html"],
    );
    assert_plan_empty(&site);
}

#[test]
fn a_watched_directory_that_goes_away_is_awaited_then_compared() {
    let fake = Fake::start();
    let (site, d) = running_on_v1(&fake);
    // `rm -rf public` then, a while later, a new build in its place (no stylesheet this time).
    std::fs::remove_dir_all(&site.root).unwrap();
    d.wait_for("is not there right now");
    assert!(fake.requests().is_empty(), "nothing is purged while the tree is gone");
    release(&site.root, "post v2");
    std::fs::remove_file(site.root.join("css/site.css")).unwrap();
    assert_exact(
        &fake,
        &d,
        &["/blog/post.html", "/css/site.css"],
        &["/blog/same.html", "/index.html"],
    );
    // One warning for the one time it was gone, whatever the number of targets.
    assert_eq!(d.lines_containing("is not there right now").len(), 1, "{}", d.log());
    assert_plan_empty(&site);
}

#[test]
fn the_watched_directory_removed_and_made_again_at_once_is_watched_anew() {
    // `rm -rf public && mkdir public && build`: the new directory may get the old one's inode
    // number, but the old watch went with the old directory.
    let fake = Fake::start();
    let (site, d) = running_on_v1(&fake);
    std::fs::remove_dir_all(&site.root).unwrap();
    release(&site.root, "post v2");
    assert_exact(
        &fake,
        &d,
        &["/blog/post.html"],
        &["/blog/same.html", "/index.html", "/css/site.css"],
    );
    assert_new_tree_watched(&site, &fake, &d);
    assert_plan_empty(&site);
}

#[test]
fn a_tree_moved_away_and_back_is_missing_meanwhile_then_watched_again() {
    // `mv public p2; mv p2 public`: the same directory (same inode) comes back, and its old
    // watches moved away with it.
    let fake = Fake::start();
    let site = Site::new();
    release(&site.root, "post v1");
    let rules = format!("metrics_listen: 127.0.0.1:0\n{}", site.rules_for(&fake, "300ms", ""));
    site.write_rules(&rules);
    let d = site.start(&["run"]);
    d.wait_ready();
    let addr = d.metrics_addr();
    assert_eq!(http_get(&addr, "/healthz").0, 200);
    let away = site.path("p2");
    std::fs::rename(&site.root, &away).unwrap();
    assert!(
        wait_until(DEADLINE, || http_get(&addr, "/healthz").0 == 503),
        "healthz stays 200 while the tree is gone:\n{}",
        d.log()
    );
    // Changed while away: found when it is back.
    std::fs::write(away.join("blog/post.html"), "post v2").unwrap();
    std::fs::rename(&away, &site.root).unwrap();
    assert!(
        wait_until(DEADLINE, || http_get(&addr, "/healthz").0 == 200),
        "{}",
        d.log()
    );
    assert_exact(
        &fake,
        &d,
        &["/blog/post.html"],
        &["/blog/same.html", "/index.html", "/css/site.css"],
    );
    assert_new_tree_watched(&site, &fake, &d);
    assert_plan_empty(&site);
}

/// Rules whose trees nest (`public` and `public/docs`): each gets every event of its tree,
/// directories made after start included, and removing the inner rule leaves the outer one
/// watching everything.
#[test]
fn nested_rules_each_see_their_whole_tree_and_outlive_each_other() {
    let fake = Fake::start();
    let site = Site::new();
    release(&site.root, "post v1");
    site.write("docs/guide.html", "guide v1");
    // The inner tree is served at a URL of its own too, so that each rule's purge shows.
    let inner = "  - name: docs\n    watch: public/docs\n    targets: [cdn]\n    url_prefix: /manual/\n";
    site.write_rules(&site.rules_for(&fake, "300ms", inner));
    let d = site.start(&["run"]);
    d.wait_ready();
    let purged = |n: usize, url: &str| {
        let vims = wait_requests(&fake, Route::VimsPurge, n, &d);
        assert!(
            vims.iter().any(|r| pattern_matches(&r.pattern(), url)),
            "{url} not purged: {:?}\n{}",
            vims.iter().map(|r| r.pattern()).collect::<Vec<_>>(),
            d.log()
        );
    };
    // Directories made after start, in the outer tree and in the inner one.
    site.write("fresh/page.html", "new");
    purged(1, "/fresh/page.html");
    let n = fake.vims_purges().len();
    site.write("docs/fresh/deep.html", "new");
    // Both rules see it (one request: they share the target).
    purged(n + 1, "/docs/fresh/deep.html");
    purged(n + 1, "/manual/fresh/deep.html");

    // The inner rule removed: the outer rule still sees everything, its docs included.
    site.write_rules(&site.rules_for(&fake, "300ms", ""));
    d.wait_for("reloaded");
    let n = fake.vims_purges().len();
    site.write("docs/fresh/deep.html", "changed again");
    purged(n + 1, "/docs/fresh/deep.html");
    let n = fake.vims_purges().len();
    site.write("blog/later/x.html", "new");
    purged(n + 1, "/blog/later/x.html");
    assert_plan_empty(&site);
}

/// A file replaced by a directory of the same name: the file is purged as deleted and leaves the
/// record (`plan` is empty after, and a restart sends nothing).
#[test]
fn a_file_replaced_by_a_directory_leaves_the_record() {
    let fake = Fake::start();
    let (site, d) = running_on_v1(&fake);
    site.write("feed", "old feed file");
    let vims_before = {
        let n = fake.vims_purges().len();
        wait_requests(&fake, Route::VimsPurge, n + 1, &d).len()
    };
    std::fs::remove_file(site.root.join("feed")).unwrap();
    site.write("feed/index.html", "feed page");
    let vims = wait_requests(&fake, Route::VimsPurge, vims_before + 1, &d);
    let p = vims.last().unwrap().pattern();
    assert!(pattern_matches(&p, "/feed/index.html"), "{p}");
    assert_plan_empty(&site);
    restart_sends_nothing(&site, &fake, d);
}

//! Varnish and nginx for real: `varnishd` with the shipped VCL and nginx with the shipped
//! configuration (ngx_cache_purge), each caching an origin that serves the watched tree. Through
//! the cache, the old bytes are served before the deploy and the new bytes after purgewatch's
//! purge: an edit, an added and a deleted file, a rename swap, a two-cache fleet with one cache
//! down during the deploy, and the verification's re-purge.

mod common;

use common::caches::{self, Cache, visit};
use common::*;

const HOST: &str = "www.example.com";

/// A debounce long enough that one deploy is one batch even when a loaded machine pauses the
/// test between two writes (the tests count requests per batch).
fn rules(site: &Site, target: &str, extra_rule: &str) -> String {
    format!(
        "state_dir: {}\ndefaults:\n  debounce: 1s\n  retry_backoff: 200ms\n  retry_backoff_max: 500ms\n  retry_attempts: 100\ntargets:\n{target}rules:\n  - name: site\n    watch: public\n    targets: [cache]\n{extra_rule}",
        site.state.display()
    )
}

fn varnish_target(caches: &[&Cache], mode: &str) -> String {
    let endpoints: Vec<&str> = caches.iter().map(|c| c.endpoint.as_str()).collect();
    format!(
        "  cache:\n    type: varnish\n    endpoints: [{}]\n    mode: {mode}\n    host: {HOST}\n",
        endpoints.join(", ")
    )
}

/// A site, its origin, and the files every test starts with, cached through `cache`.
fn site_with_files() -> (Site, u16) {
    let site = Site::new();
    site.write("index.html", "home v1");
    site.write("blog/post.html", "post v1");
    site.write("blog/old.html", "old v1");
    let origin = caches::origin(site.root.clone());
    (site, origin)
}

fn warm(cache: &Cache) {
    assert_eq!(visit(cache.port, HOST, "/blog/post.html"), (200, "post v1".into()));
    assert_eq!(visit(cache.port, HOST, "/blog/old.html"), (200, "old v1".into()));
    assert_eq!(visit(cache.port, HOST, "/blog/new.html").0, 404);
    assert_eq!(visit(cache.port, HOST, "/").1, "home v1");
}

/// Changes the tree while the cache still serves the old bytes; waits until it serves the new.
fn deploy_and_see(site: &Site, cache: &Cache, d: &Daemon) {
    site.write("blog/post.html", "post v2");
    site.write("blog/new.html", "new v1");
    std::fs::remove_file(site.root.join("blog/old.html")).unwrap();
    assert_eq!(
        visit(cache.port, HOST, "/blog/post.html").1,
        "post v1",
        "cached before the purge"
    );
    let fresh = wait_until(DEADLINE, || {
        visit(cache.port, HOST, "/blog/post.html").1 == "post v2"
            && visit(cache.port, HOST, "/blog/new.html") == (200, "new v1".into())
            && visit(cache.port, HOST, "/blog/old.html").0 == 404
    });
    assert!(fresh, "the cache still serves old bytes:\n{}", d.log());
    // What did not change stays cached: the home page was not purged.
    assert_eq!(visit(cache.port, HOST, "/").1, "home v1");
}

#[test]
fn varnish_ban_mode_serves_the_new_bytes_after_the_purge() {
    let (site, origin) = site_with_files();
    let cache = caches::varnish(site.dir.path(), origin);
    warm(&cache);
    // Changed before the daemon's first start: the baseline, never purged (the cache keeps v1).
    site.write("index.html", "home v2 (baseline)");
    site.write_rules(&rules(&site, &varnish_target(&[&cache], "ban"), ""));
    let d = site.start(&["run"]);
    d.wait_ready();
    deploy_and_see(&site, &cache, &d);
    d.wait_for("purged target=cache");
    assert!(
        d.lines_containing("purged target=cache")[0].contains("BAN"),
        "{}",
        d.log()
    );
    assert_plan_empty(&site);
}

#[test]
fn varnish_purge_mode_and_a_rename_swap() {
    let (site, origin) = site_with_files();
    let cache = caches::varnish(site.dir.path(), origin);
    warm(&cache);
    site.write_rules(&rules(&site, &varnish_target(&[&cache], "purge"), ""));
    let d = site.start(&["run"]);
    d.wait_ready();
    deploy_and_see(&site, &cache, &d);
    assert!(
        d.lines_containing("purged target=cache")[0].contains("PURGE"),
        "{}",
        d.log()
    );
    // A new release renamed into place: only what differs is purged.
    let next = site.path("public.new");
    std::fs::create_dir_all(next.join("blog")).unwrap();
    std::fs::write(next.join("index.html"), "home v1").unwrap();
    std::fs::write(next.join("blog/post.html"), "post v3").unwrap();
    std::fs::write(next.join("blog/new.html"), "new v1").unwrap();
    assert_eq!(visit(cache.port, HOST, "/blog/post.html").1, "post v2");
    std::fs::rename(&site.root, site.path("public.old")).unwrap();
    std::fs::rename(&next, &site.root).unwrap();
    assert!(
        wait_until(DEADLINE, || visit(cache.port, HOST, "/blog/post.html").1 == "post v3"),
        "{}",
        d.log()
    );
    assert_plan_empty(&site);
}

#[test]
fn a_fleet_with_one_cache_down_purges_the_other_and_catches_up_later() {
    let (site, origin) = site_with_files();
    let up = caches::varnish(site.dir.path(), origin);
    let mut down = caches::varnish(site.dir.path(), origin);
    warm(&up);
    warm(&down);
    site.write_rules(&rules(&site, &varnish_target(&[&up, &down], "ban"), ""));
    let (code, out, err) = site.run(&["check", "--remote"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("cache@{}", down.endpoint)),
        "each endpoint checked: {out}"
    );
    let d = site.start(&["run"]);
    d.wait_ready();
    down.stop();
    deploy_and_see(&site, &up, &d);
    // The cache that is down is retried on its own; `status` names it.
    d.wait_for(&format!("cache@{}", down.endpoint));
    let (_, status, _) = site.run(&["status"]);
    assert!(
        status.contains(&format!("target \"cache@{}\"", down.endpoint)),
        "{status}"
    );
    // Back (restarted: empty), it gets the purge it missed; the other was purged once.
    down.start();
    let target = format!("purged target=cache@{}", down.endpoint);
    d.wait_for(&target);
    assert_eq!(
        d.lines_containing(&format!("purged target=cache@{}", up.endpoint))
            .len(),
        1,
        "{}",
        d.log()
    );
    assert_eq!(visit(down.port, HOST, "/blog/post.html").1, "post v2");
    assert_plan_empty(&site);
}

#[test]
fn nginx_with_ngx_cache_purge_serves_the_new_bytes_after_the_purge() {
    let (site, origin) = site_with_files();
    let cache = caches::nginx(site.dir.path(), origin);
    warm(&cache);
    let target = format!(
        "  cache:\n    type: nginx\n    endpoints: [{}]\n    purge_location: /purge\n    host: {HOST}\n",
        cache.endpoint
    );
    site.write_rules(&rules(&site, &target, ""));
    let d = site.start(&["run"]);
    d.wait_ready();
    deploy_and_see(&site, &cache, &d);
    // `purge --url` through the module, and `--all` refused (it purges one key at a time).
    site.write("blog/post.html", "post v9");
    let (code, out, err) = site.run(&["purge", "cache", "--url", "/blog/post.html"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(visit(cache.port, HOST, "/blog/post.html").1, "post v9");
    // --all: every URL of the tree (the module purges one key at a time).
    site.write("index.html", "home v9");
    let (code, out, err) = site.run(&["purge", "cache", "--all"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(visit(cache.port, HOST, "/").1, "home v9");
}

#[test]
fn verify_repurges_through_a_real_varnish() {
    let (site, origin) = site_with_files();
    let cache = caches::varnish(site.dir.path(), origin);
    warm(&cache);
    let verify = format!(
        "    verify:\n      base_url: {}\n      after: 100ms\n      repurge: 2\n",
        cache.endpoint
    );
    // The Host the edge is visited with is the cache's own address: the rules say none.
    let target = format!(
        "  cache:\n    type: varnish\n    endpoints: [{}]\n    mode: purge\n",
        cache.endpoint
    );
    site.write_rules(&rules(&site, &target, &verify));
    let d = site.start(&["run"]);
    d.wait_ready();
    let host = cache.endpoint.trim_start_matches("http://").to_string();
    assert_eq!(visit(cache.port, &host, "/blog/post.html").1, "post v1");
    site.write("blog/post.html", "post v2");
    d.wait_for("verified: the edge serves the new bytes");
    assert_eq!(visit(cache.port, &host, "/blog/post.html").1, "post v2");
}

/// The re-purge for real: behind a Varnish, an origin that lags one request behind the tree, so
/// that the cache refetches the old bytes right after purgewatch's purge. The verification finds
/// the edge stale, re-purges exactly the stale URL through the target, and the edge then serves
/// the new bytes; the unchanged home page stays cached throughout.
#[test]
fn verify_finds_a_stale_edge_and_repurges_it_through_a_real_varnish() {
    let site = Site::new();
    site.write("index.html", "home v1");
    site.write("blog/post.html", "post v1");
    let origin = caches::lagging_origin(site.root.clone(), 1);
    let cache = caches::varnish(site.dir.path(), origin);
    let host = cache.endpoint.trim_start_matches("http://").to_string();
    assert_eq!(visit(cache.port, &host, "/blog/post.html").1, "post v1");
    assert_eq!(visit(cache.port, &host, "/").1, "home v1");
    let verify = format!(
        "    verify:\n      base_url: {}\n      after: 300ms\n      repurge: 2\n",
        cache.endpoint
    );
    let target = format!(
        "  cache:\n    type: varnish\n    endpoints: [{}]\n    mode: purge\n",
        cache.endpoint
    );
    site.write_rules(&rules(&site, &target, &verify));
    let d = site.start(&["run"]);
    d.wait_ready();
    site.write("blog/post.html", "post v2");
    d.wait_for("verified: the edge serves the new bytes");
    let line = d.lines_containing("verified: the edge serves the new bytes")[0].clone();
    assert!(
        line.contains("repurges=1"),
        "one re-purge fixed it: {line}\n{}",
        d.log()
    );
    assert_eq!(visit(cache.port, &host, "/blog/post.html").1, "post v2");
    assert_eq!(visit(cache.port, &host, "/").1, "home v1", "nothing else purged");
}

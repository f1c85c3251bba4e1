//! CloudFront on the real binary against a fake that checks every SigV4 signature (computed
//! independently in tests/common/cloudfront.rs), de-duplicates on CallerReference and refuses
//! past 3,000 paths in progress: a deploy is one invalidation followed until Completed; a retry
//! after a lost reply makes one invalidation, not two; throttling by paths in progress is
//! retried; past `max_paths`, wildcards; `--dry-run` shows paths and cost; never a secret out.

mod common;

use common::cloudfront::{ACCESS_KEY, CloudFront, DISTRIBUTION, SECRET_KEY};
use common::*;

/// A debounce long enough that one deploy is one batch even when a loaded machine pauses the
/// test between two writes (the tests count requests per batch).
fn site_with(cf: &CloudFront, extra: &str, keys_in_rules: bool) -> Site {
    let site = Site::new();
    for f in [
        "index.html",
        "blog/a.html",
        "blog/b.html",
        "blog/c.html",
        "blog/d.html",
        "about.html",
    ] {
        site.write(f, "v1");
    }
    let keys = if keys_in_rules {
        format!("    access_key_id: {ACCESS_KEY}\n    secret_access_key: {SECRET_KEY}\n")
    } else {
        String::new()
    };
    site.write_rules(&format!(
        "state_dir: {}\ndefaults:\n  debounce: 1s\n  retry_backoff: 100ms\n  retry_backoff_max: 300ms\n  retry_attempts: 50\ntargets:\n  cloudfront:\n    type: cloudfront\n    distribution_id: {DISTRIBUTION}\n{keys}    api_url: {}\n{extra}rules:\n  - name: site\n    watch: public\n    base_url: https://www.example.com\n    targets: [cloudfront]\n",
        site.state.display(),
        cf.url()
    ));
    site
}

#[test]
fn a_deploy_is_one_signed_invalidation_followed_until_completed() {
    let cf = CloudFront::start();
    let site = site_with(&cf, "", true);
    let d = site.start(&["run"]);
    d.wait_ready();
    site.write("blog/a.html", "v2");
    site.write("about.html", "v2");
    d.wait_for("provider finished the purge");
    assert_eq!(cf.created(), 1, "{}", d.log());
    assert_eq!(cf.paths()[0], vec!["/about.html", "/blog/a.html"]);
    assert_eq!(cf.bad_signatures(), 0);
    assert!(
        d.lines_containing("provider finished the purge")[0].contains("Completed"),
        "{}",
        d.log()
    );
    // A lost reply: the retry carries the same CallerReference, and no second invalidation.
    cf.drop_next_reply();
    site.write("blog/b.html", "v2");
    assert!(wait_until(DEADLINE, || cf.posts() >= 3), "{}", d.log());
    d.wait_for_lines("provider finished the purge", 2);
    assert_eq!(cf.created(), 2, "one invalidation for the retried batch: {}", d.log());
    let log = d.log();
    assert!(
        !log.contains(SECRET_KEY) && !log.contains(ACCESS_KEY),
        "a key leaked:\n{log}"
    );
    assert_plan_empty(&site);
}

#[test]
fn paths_in_progress_past_the_limit_are_retried_and_max_paths_makes_wildcards() {
    let cf = CloudFront::start();
    let site = site_with(&cf, "    max_paths: 2\n", true);
    cf.occupy(2999);
    let d = site.start(&["run"]);
    d.wait_ready();
    for f in ["blog/a.html", "blog/b.html", "blog/c.html", "about.html"] {
        site.write(f, "v2");
    }
    d.wait_for("TooManyInvalidationsInProgress");
    assert_eq!(cf.created(), 0);
    cf.release();
    d.wait_for("provider finished the purge");
    assert_eq!(cf.created(), 1);
    assert_eq!(cf.paths()[0], vec!["/about.html", "/blog/*"], "{}", d.log());
    // `plan` says what the next batch would cost, counting the month's paths (2 so far).
    let mut d = d;
    d.signal("TERM");
    assert_eq!(d.wait_exit(), 0);
    site.write("index.html", "v3");
    let (code, plan, err) = site.run(&["plan"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        plan.contains("2 of the 1000 free paths used this month; cost $0.000"),
        "{plan}"
    );
}

#[test]
fn dry_run_shows_paths_and_cost_and_credentials_come_from_the_aws_variables() {
    let cf = CloudFront::start();
    let site = site_with(&cf, "    free_paths_per_month: 1\n", false);
    let env = [("AWS_ACCESS_KEY_ID", ACCESS_KEY), ("AWS_SECRET_ACCESS_KEY", SECRET_KEY)];
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin())
            .args(args)
            .arg("-c")
            .arg(&site.rules)
            .envs(env)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["check", "--remote"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("d111111abcdef8.cloudfront.net"), "{out}");
    // The month's free paths (1 here) come first: 2 paths cost one path's price.
    let dry = [
        "purge",
        "cloudfront",
        "--url",
        "/blog/a.html",
        "--url",
        "/about.html",
        "--dry-run",
    ];
    let (code, out, err) = run(&dry);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("2 paths this batch; 0 of the 1 free paths used this month; cost $0.005"),
        "{out}"
    );
    assert_eq!(cf.posts(), 0, "a dry run sends nothing");
    let (code, out, err) = run(&["purge", "cloudfront", "--all", "--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(cf.paths()[0], vec!["/*"]);
    // Counted in the state directory: the month's free path is used now.
    let (_, out, _) = run(&dry);
    assert!(
        out.contains("1 of the 1 free paths used this month; cost $0.010"),
        "{out}"
    );

    // The daemon's own dry run says it too, for the batch it would send.
    let mut cmd = site.command(std::path::Path::new(bin()), &["run", "--dry-run"]);
    cmd.envs(env);
    let d = Daemon::spawn(cmd);
    d.wait_ready();
    site.write("blog/a.html", "a v9");
    d.wait_for("dry-run: would purge");
    let line = d.lines_containing("dry-run: would purge")[0].clone();
    assert!(
        line.contains("1 path this batch; 1 of the 1 free paths used this month; cost $0.005"),
        "{line}"
    );
    assert!(!line.contains(SECRET_KEY) && !line.contains(ACCESS_KEY), "{line}");
    drop(d);

    // A wrong secret: refused by the signature check, exit 1, no key in the output.
    let (code, out, err) = {
        let out = std::process::Command::new(bin())
            .args(["check", "--remote", "-c"])
            .arg(&site.rules)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", "wrong-secret-key-12345")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("SignatureDoesNotMatch"), "{err}");
    assert!(!format!("{out}{err}").contains("wrong-secret-key-12345"), "{err}");
}

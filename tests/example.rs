//! The shipped examples: every rules file validates, and `rules.example.yaml` runs with
//! `--dry-run` on a fresh clone, with no credentials.

mod common;

use common::*;
use std::process::{Command, Stdio};

fn repo(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[test]
fn example_rules_files_validate() {
    let creds = tempfile::tempdir().unwrap();
    for f in ["sitehost", "vims"] {
        std::fs::write(creds.path().join(f), "secret\n").unwrap();
    }
    for file in ["rules.example.yaml", "examples/hugo.yaml", "examples/multi-target.yaml"] {
        let out = Command::new(bin())
            .args(["check", "-c"])
            .arg(repo(file))
            .env("SITEHOST_API_KEY", "k")
            .env("CREDENTIALS_DIRECTORY", creds.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn the_example_runs_with_dry_run_and_no_credentials() {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(["run", "--dry-run", "-c"])
        .arg(repo("rules.example.yaml"))
        .env_remove("SITEHOST_API_KEY")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("STATE_DIRECTORY")
        .env_remove("XDG_STATE_HOME")
        .env("HOME", home.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut d = Daemon::spawn(cmd);
    d.wait_ready();
    assert!(
        d.log().contains("SITEHOST_API_KEY"),
        "the unset variable is a warning: {}",
        d.log()
    );
    assert_eq!(
        d.lines_containing("CREDENTIALS_DIRECTORY").len(),
        1,
        "one warning per problem: {}",
        d.log()
    );
    assert!(!d.log().contains("cannot read token_file"), "{}", d.log());
    d.signal("TERM");
    assert_eq!(d.wait_exit(), 0, "{}", d.log());
    assert!(
        !home.path().join(".local/state/purgewatch").exists(),
        "a dry run writes no state"
    );
}

//! The commands README.md gives work as written: every `purgewatch` command line in its shell
//! blocks parses (subcommand and flags) and names files the repository has; the Quickstart runs
//! for real on a copy of the shipped example; and the mock provider it points to answers a real
//! purge.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap::Parser;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The lines of README.md's ```sh blocks, comments taken off, continuation lines joined.
fn shell_lines() -> Vec<String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let mut out = Vec::new();
    let mut inside = false;
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            inside = !inside && line.trim() == "```sh";
            continue;
        }
        if !inside {
            continue;
        }
        // A comment starts at ` #` (two spaces or more before it in these blocks).
        let code = match line.find("  #") {
            Some(i) => &line[..i],
            None => line,
        };
        let code = code.trim();
        if !code.is_empty() && !code.starts_with('#') {
            out.push(code.to_string());
        }
    }
    assert!(out.len() > 10, "{out:?}");
    out
}

/// Splits a command line into words (single and double quotes; no other shell syntax is used in
/// the README's purgewatch lines).
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote = None;
    let mut any = false;
    for c in line.chars() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (_, c) => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// The arguments given to purgewatch by a README command, when it runs purgewatch.
fn purgewatch_args(line: &str) -> Option<Vec<String>> {
    let mut w = words(line);
    // `sudo`, `VAR=value` prefixes; `cargo run --` runs the binary.
    while let Some(first) = w.first() {
        if first == "sudo" || (first.contains('=') && !first.starts_with('-')) {
            w.remove(0);
        } else {
            break;
        }
    }
    if w.len() >= 3 && w[0] == "cargo" && w[1] == "run" && w[2] == "--" {
        return Some(w[3..].to_vec());
    }
    let program = w.first()?;
    (Path::new(program).file_name()? == "purgewatch").then(|| w[1..].to_vec())
}

#[test]
fn every_purgewatch_command_in_the_readme_parses_and_names_files_that_exist() {
    let mut seen = 0;
    let segments = shell_lines()
        .into_iter()
        .flat_map(|l| l.split("&&").map(|s| s.trim().to_string()).collect::<Vec<_>>())
        .filter(|l| !l.contains('|') && !l.contains('>'));
    for line in segments {
        if let Some(args) = purgewatch_args(&line) {
            seen += 1;
            let argv = std::iter::once("purgewatch".to_string()).chain(args.iter().cloned());
            if let Err(e) = purgewatch::cli::Cli::try_parse_from(argv) {
                // --help and --version "fail" to parse by printing; none are in the README.
                panic!("README line does not parse: {line}\n{e}");
            }
            if let Some(i) = args.iter().position(|a| a == "-c" || a == "--config") {
                let file = &args[i + 1];
                if !file.starts_with('/') {
                    assert!(repo().join(file).exists(), "README line names a missing {file}: {line}");
                }
            }
        }
        // `install SRC DEST` and `cp SRC DEST` copy files of the repository.
        let w = words(&line);
        if matches!(w.first().map(String::as_str), Some("install" | "cp")) {
            let sources: Vec<&String> = w[1..w.len() - 1]
                .iter()
                .filter(|a| !a.starts_with('-') && !a.starts_with('/') && !a.starts_with("target/"))
                .filter(|a| !a.chars().all(|c| c.is_ascii_digit()))
                .collect();
            for src in sources {
                assert!(repo().join(src).exists(), "README line copies a missing {src}: {line}");
            }
        }
    }
    assert!(seen >= 6, "only {seen} purgewatch commands found");
}

/// A copy of the shipped example (rules.example.yaml and examples/site) in a temp directory.
fn example_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(repo().join("rules.example.yaml"), dir.path().join("rules.example.yaml")).unwrap();
    let mut stack = vec![PathBuf::from("examples/site")];
    while let Some(rel) = stack.pop() {
        let from = repo().join(&rel);
        if from.is_dir() {
            std::fs::create_dir_all(dir.path().join(&rel)).unwrap();
            for e in std::fs::read_dir(&from).unwrap() {
                stack.push(rel.join(e.unwrap().file_name()));
            }
        } else {
            std::fs::copy(&from, dir.path().join(&rel)).unwrap();
        }
    }
    dir
}

fn purgewatch(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .current_dir(dir)
        .env_remove("SITEHOST_API_KEY")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("PURGEWATCH_CONFIG")
        .env_remove("NOTIFY_SOCKET")
        .env("XDG_STATE_HOME", dir.join("state"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// The Quickstart, as written: check (with the credentials it says it needs), the daemon in a
/// dry run seeing an edit, and the manual purge's dry run.
#[test]
fn the_quickstart_runs_as_written() {
    let dir = example_copy();
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("vims"), "sk_test_token\n").unwrap();
    let out = purgewatch(dir.path(), &["check", "-c", "rules.example.yaml"])
        .env("SITEHOST_API_KEY", "sh-key")
        .env("CREDENTIALS_DIRECTORY", &creds)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let mut d = Daemon::spawn(purgewatch(
        dir.path(),
        &["run", "--dry-run", "-c", "rules.example.yaml"],
    ));
    d.wait_ready();
    let hello = dir.path().join("examples/site/blog/hello.html");
    let mut text = std::fs::read_to_string(&hello).unwrap();
    text.push_str("<p>edit</p>\n");
    std::fs::write(&hello, text).unwrap();
    d.wait_for("would purge");
    assert!(
        d.lines_containing("would purge")
            .iter()
            .any(|l| l.contains("/blog/hello.html")),
        "{}",
        d.log()
    );
    d.signal("TERM");
    assert_eq!(d.wait_exit(), 0, "{}", d.log());

    let out = purgewatch(
        dir.path(),
        &[
            "purge",
            "cdn",
            "--url",
            "/blog/hello.html",
            "--dry-run",
            "-c",
            "rules.example.yaml",
        ],
    )
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("would send to \"cdn\"") && stdout.contains("hello"),
        "{stdout}"
    );
}

/// `purgewatch-mock-provider PORT`, as the README says, answers a real purge with `--wait`.
#[test]
fn the_mock_provider_answers_a_purge() {
    let dir = example_copy();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut mock = Command::new(env!("CARGO_BIN_EXE_purgewatch-mock-provider"))
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let up = wait_until(DEADLINE, || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert!(up, "the mock provider did not listen");
    let rules = std::fs::read_to_string(dir.path().join("rules.example.yaml"))
        .unwrap()
        .replace(
            "    token_file: ${CREDENTIALS_DIRECTORY}/vims\n",
            &format!("    token: sk_test\n    api_url: http://127.0.0.1:{port}/api\n"),
        )
        .replace(
            "    api_key: ${SITEHOST_API_KEY}\n",
            &format!("    api_key: sh_test\n    api_url: http://127.0.0.1:{port}/1.3\n"),
        );
    std::fs::write(dir.path().join("rules.yaml"), rules).unwrap();
    for target in ["cdn", "www-stack"] {
        let out = purgewatch(
            dir.path(),
            &[
                "purge",
                target,
                "--url",
                "/blog/hello.html",
                "--wait",
                "-c",
                "rules.yaml",
            ],
        )
        .output()
        .unwrap();
        assert!(
            out.status.success(),
            "{target}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = mock.kill();
    let _ = mock.wait();
    let mut printed = String::new();
    use std::io::Read;
    mock.stdout.take().unwrap().read_to_string(&mut printed).unwrap();
    assert!(printed.contains("purge"), "it prints every request:\n{printed}");
}

//! What build.rs generates for the package from the clap definition: a man page per command and
//! the bash, zsh and fish completions, each naming every subcommand and flag; and `--version`
//! with the git revision.

use std::path::PathBuf;

use clap::CommandFactory;

fn assets() -> PathBuf {
    // build.rs copies them next to the binary: target/<profile>/assets.
    PathBuf::from(env!("CARGO_BIN_EXE_purgewatch"))
        .parent()
        .unwrap()
        .join("assets")
}

fn read(rel: &str) -> String {
    let p = assets().join(rel);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    // roff escapes dashes.
    text.replace("\\-", "-")
}

fn long_flags(cmd: &clap::Command) -> Vec<String> {
    cmd.get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect()
}

#[test]
fn man_pages_name_every_subcommand_and_flag() {
    let cli = purgewatch::cli::Cli::command();
    let main = read("man/purgewatch.1");
    assert!(main.contains(".TH purgewatch 1"), "{main}");
    for flag in long_flags(&cli) {
        assert!(main.contains(&flag), "purgewatch.1 lacks {flag}");
    }
    for sub in cli.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = sub.get_name();
        assert!(
            main.contains(&format!("purgewatch-{name}(1)")),
            "purgewatch.1 lacks {name}"
        );
        let page = read(&format!("man/purgewatch-{name}.1"));
        for flag in long_flags(sub) {
            assert!(page.contains(&flag), "purgewatch-{name}.1 lacks {flag}");
        }
    }
}

#[test]
fn completions_name_every_subcommand_and_flag() {
    let cli = purgewatch::cli::Cli::command();
    for file in [
        "completions/purgewatch.bash",
        "completions/_purgewatch",
        "completions/purgewatch.fish",
    ] {
        let text = read(file);
        for sub in cli.get_subcommands().filter(|s| s.get_name() != "help") {
            assert!(text.contains(sub.get_name()), "{file} lacks {}", sub.get_name());
            for flag in long_flags(sub) {
                let bare = flag.trim_start_matches("--");
                assert!(
                    text.contains(&flag) || text.contains(&format!("-l {bare}")),
                    "{file} lacks {flag}"
                );
            }
        }
    }
}

#[test]
fn the_packaged_unit_runs_the_installed_binary() {
    let unit = read("purgewatch.service");
    assert!(unit.contains("ExecStart=/usr/bin/purgewatch run"), "{unit}");
    assert!(!unit.contains("/usr/local/bin"), "{unit}");
}

#[test]
fn version_names_the_git_revision() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_purgewatch"))
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("purgewatch {}", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    // Built from a git checkout (as CI and developers build it): the revision is named.
    if std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.git")).exists() {
        assert!(text.contains("(git "), "{text}");
    }
}

/// `purgewatch.rules(5)` names every key the rules file accepts; `purgewatch(1)` shows `-c FILE`
/// in its synopsis and has the sections a sysadmin looks for; every page is also gzipped (as
/// the package installs it, so that plain `cargo deb` works).
#[test]
fn man_pages_document_the_rules_file_and_what_a_sysadmin_needs() {
    let rules = read("man/purgewatch.rules.5");
    assert!(rules.contains(".TH purgewatch.rules 5"), "{rules}");
    for key in purgewatch::config::rules_keys() {
        // As a tag in bold: `.B key`, or one of the words of a `.BR` line.
        let described = rules
            .lines()
            .filter(|l| l.starts_with(".B ") || l.starts_with(".BR "))
            .any(|l| l.split_whitespace().skip(1).any(|w| w == key));
        assert!(described, "purgewatch.rules.5 does not describe `{key}`");
    }
    let main = read("man/purgewatch.1");
    let synopsis = &main[main.find(".SH SYNOPSIS").unwrap()..main.find(".SH DESCRIPTION").unwrap()];
    assert!(synopsis.contains("\\fB-c\\fR \\fIFILE\\fR"), "{synopsis}");
    for section in ["EXIT STATUS", "ENVIRONMENT", "FILES", "EXAMPLES", "SEE ALSO"] {
        assert!(
            main.contains(&format!(".SH \"{section}\"")) || main.contains(&format!(".SH {section}\n")),
            "purgewatch.1 lacks {section}"
        );
    }
    assert!(main.contains("purgewatch.rules") && main.contains("PURGEWATCH_CONFIG"));
    for entry in std::fs::read_dir(assets().join("man")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "gz") {
            continue;
        }
        let gz =
            std::fs::read(path.with_extension(format!("{}.gz", path.extension().unwrap().to_str().unwrap()))).unwrap();
        let mut text = Vec::new();
        use std::io::Read;
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut text).unwrap();
        assert_eq!(text, std::fs::read(&path).unwrap(), "{}", path.display());
    }
}

/// The package installs the sysctl file, and it sets at least what `check` and the daemon
/// suggest for a host (`purgewatch::limits::SHIPPED_*`).
#[test]
fn the_package_ships_the_kernel_limits_a_host_needs() {
    let root = env!("CARGO_MANIFEST_DIR");
    let conf = std::fs::read_to_string(format!("{root}/examples/sysctl.d/60-purgewatch.conf")).unwrap();
    let value = |key: &str| -> u64 {
        conf.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .find_map(|l| l.split_once('=').filter(|(k, _)| k.trim() == key))
            .map(|(_, v)| v.trim().parse().unwrap())
            .unwrap_or_else(|| panic!("{key} not set"))
    };
    use purgewatch::limits::{SHIPPED_INSTANCES, SHIPPED_QUEUE, SHIPPED_WATCHES};
    assert_eq!(value("fs.inotify.max_user_watches"), SHIPPED_WATCHES);
    assert_eq!(value("fs.inotify.max_user_instances"), SHIPPED_INSTANCES);
    assert_eq!(value("fs.inotify.max_queued_events"), SHIPPED_QUEUE);
    let manifest = std::fs::read_to_string(format!("{root}/Cargo.toml")).unwrap();
    assert!(
        manifest.contains(r#"["examples/sysctl.d/60-purgewatch.conf", "usr/lib/sysctl.d/60-purgewatch.conf", "644"]"#),
        "Cargo.toml's deb assets lack the sysctl file"
    );
    // `sysctl` itself accepts the file (each line names a real key), where it is installed.
    if std::path::Path::new("/proc/sys/fs/inotify/max_user_watches").exists() {
        for key in ["max_user_watches", "max_user_instances", "max_queued_events"] {
            assert!(conf.contains(&format!("fs.inotify.{key} = ")), "{key}");
        }
    }
}

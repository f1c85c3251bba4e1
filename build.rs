//! Build-time assets from the clap definition in `src/cli.rs` (never written by hand): the man
//! pages (`purgewatch.1` and one per subcommand, with `clap_mangen`) and the bash, zsh and fish
//! completions (`clap_complete`), written to `OUT_DIR` and copied to `target/<profile>/assets/`,
//! where `cargo deb` (see `[package.metadata.deb]`) picks them up. Also `PURGEWATCH_VERSION`:
//! the package version and the git revision, for `--version`.

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "src/cli.rs"]
#[allow(dead_code)]
mod cli;

use clap::CommandFactory;

fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=src/cli.rs");
    println!("cargo:rerun-if-changed=build.rs");
    version();
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let assets = out.join("assets");
    generate(&assets)?;
    unit(&assets)?;
    // OUT_DIR is target/<profile>/build/purgewatch-<hash>/out: the assets also go to
    // target/<profile>/assets, a path that does not change from build to build.
    if let Some(profile_dir) = out.ancestors().nth(3) {
        copy_dir(&assets, &profile_dir.join("assets"))?;
    }
    Ok(())
}

/// `PURGEWATCH_VERSION`: `0.1.0 (git 1a2b3c4)`, or `0.1.0` outside a git checkout.
fn version() {
    let pkg = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let version = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(rev) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some();
            format!("{pkg} (git {rev}{})", if dirty { ", modified" } else { "" })
        }
        None => pkg,
    };
    println!("cargo:rustc-env=PURGEWATCH_VERSION={version}");
    if let Some(git_dir) = git(&["rev-parse", "--git-dir"]) {
        let head = Path::new(&git_dir).join("HEAD");
        println!("cargo:rerun-if-changed={}", head.display());
        if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!(
                "cargo:rerun-if-changed={}",
                Path::new(&git_dir).join(reference).display()
            );
        }
    }
}

/// Man pages in `dir/man`, completions in `dir/completions`.
fn generate(dir: &Path) -> std::io::Result<()> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    let cmd = cli::Cli::command();
    clap_mangen::generate_to(cmd.clone(), &man)?;
    main_page(cmd.clone(), &man.join("purgewatch.1"))?;
    println!("cargo:rerun-if-changed=packaging/purgewatch.rules.5");
    std::fs::copy("packaging/purgewatch.rules.5", man.join("purgewatch.rules.5"))?;
    gzip_pages(&man)?;
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        clap_complete::generate_to(shell, &mut cmd.clone(), "purgewatch", &completions)?;
    }
    Ok(())
}

/// `purgewatch(1)`: clap_mangen's sections, with a synopsis that shows `-c FILE`, and the
/// sections a sysadmin looks for: exit status, environment, files, examples.
fn main_page(cmd: clap::Command, path: &Path) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(cmd);
    let mut out: Vec<u8> = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    out.extend_from_slice(MAIN_SYNOPSIS.as_bytes());
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    man.render_subcommands_section(&mut out)?;
    out.extend_from_slice(MAIN_SECTIONS.as_bytes());
    man.render_version_section(&mut out)?;
    std::fs::write(path, out)
}

const MAIN_SYNOPSIS: &str = r#".SH SYNOPSIS
.B purgewatch
[\fB\-c\fR \fIFILE\fR] [\fB\-\-log\-format\fR \fBtext\fR|\fBjson\fR] \fICOMMAND\fR [\fIARGS\fR]
.br
.B purgewatch run
[\fB\-c\fR \fIFILE\fR] [\fB\-\-dry\-run\fR]
.br
.B purgewatch check
[\fB\-c\fR \fIFILE\fR] [\fB\-\-remote\fR]
.br
.B purgewatch purge
[\fB\-c\fR \fIFILE\fR] \fITARGET\fR [\fB\-\-all\fR | \fB\-\-url\fR \fIPATH\fR... | \fB\-\-pattern\fR \fIREGEX\fR] [\fB\-\-wait\fR] [\fB\-\-dry\-run\fR]
.br
.B purgewatch status
[\fB\-c\fR \fIFILE\fR] [\fB\-\-json\fR]
.br
.B purgewatch plan
[\fB\-c\fR \fIFILE\fR]
.br
.B purgewatch verify
[\fB\-c\fR \fIFILE\fR] [\fIRULE\fR] [\fB\-\-sample\fR \fIN\fR | \fB\-\-all\fR]
"#;

const MAIN_SECTIONS: &str = r#".SH "EXIT STATUS"
.TP
.B 0
Success.
.TP
.B 1
A runtime failure: a purge that failed for good, a provider error, an unusable state directory,
a second daemon on a state directory already in use, a stale URL found by \fBverify\fR.
.TP
.B 2
A usage or rules-file error (each printed as \fIFILE\fR:\fILINE\fR:\fICOL\fR: message).
.SH ENVIRONMENT
.TP
.B PURGEWATCH_CONFIG
The rules file when \fB\-c\fR is not given (default \fI/etc/purgewatch/rules.yaml\fR).
.TP
.B RUST_LOG
The log level (default \fBinfo\fR); logs go to standard error.
.TP
.B STATE_DIRECTORY
The default state directory (systemd sets it for the service).
.TP
.B CREDENTIALS_DIRECTORY
Where \fB${CREDENTIALS_DIRECTORY}\fR in the rules points (systemd sets it for the service);
for commands typed by hand, \fI/etc/purgewatch/credentials\fR when unset and present.
.TP
.BR NOTIFY_SOCKET ", " WATCHDOG_USEC
systemd's readiness and watchdog protocol (\fBType=notify\fR).
.SH FILES
.TP
.I /etc/purgewatch/rules.yaml
The rules file; see \fBpurgewatch.rules\fR(5).
.TP
.I /etc/purgewatch/credentials/
The secrets the unit loads with \fBLoadCredential=\fR.
.TP
.I /var/lib/purgewatch/
The state directory under systemd (\fBStateDirectory=purgewatch\fR).
.TP
.I /lib/systemd/system/purgewatch.service
The unit: \fBsystemctl enable \-\-now purgewatch\fR, \fBsystemctl reload purgewatch\fR.
.SH EXAMPLES
.nf
sudo purgewatch check                  # validate the rules
sudo purgewatch check \-\-remote         # and ask each provider
purgewatch run \-\-dry\-run \-c rules.yaml   # watch and plan, send nothing
sudo purgewatch purge cdn \-\-all \-\-wait  # a first purge
sudo purgewatch purge cdn \-\-url /blog/post.html
sudo purgewatch status                 # pending work, last purge per target
sudo purgewatch plan                   # what would be purged now
.fi
.SH "SEE ALSO"
.BR purgewatch.rules (5),
.BR purgewatch\-run (1),
.BR purgewatch\-check (1),
.BR purgewatch\-purge (1),
.BR purgewatch\-status (1),
.BR purgewatch\-plan (1),
.BR purgewatch\-verify (1),
.BR systemd.exec (5)
"#;

/// Each page also as `PAGE.gz` (as Debian installs them; no timestamp in the header).
fn gzip_pages(dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "gz") {
            continue;
        }
        let text = std::fs::read(&path)?;
        let mut gz = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::best());
        gz.write_all(&text)?;
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".gz");
        std::fs::write(dir.join(name), gz.finish()?)?;
    }
    Ok(())
}

/// The packaged systemd unit: the example unit with the binary in /usr/bin.
fn unit(dir: &Path) -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=examples/purgewatch.service");
    let text = std::fs::read_to_string("examples/purgewatch.service")?;
    let packaged: String = text
        .lines()
        .filter(|l| !l.starts_with("#   install") && !l.starts_with("#   cp "))
        .map(|l| l.replace("/usr/local/bin/", "/usr/bin/"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.join("purgewatch.service"), packaged + "\n")
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

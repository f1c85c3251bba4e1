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
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        clap_complete::generate_to(shell, &mut cmd.clone(), "purgewatch", &completions)?;
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

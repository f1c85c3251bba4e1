//! The command line (clap derive). Usage errors exit with status 2.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// `--version`: the package version and the git revision it was built from (set by build.rs;
/// the version alone where the source has no git history).
const VERSION: &str = match option_env!("PURGEWATCH_VERSION") {
    Some(v) => v,
    None => env!("CARGO_PKG_VERSION"),
};

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Parser)]
#[command(
    name = "purgewatch",
    version = VERSION,
    about = "Watch static-site deploy directories and purge exactly what changed from the caches and CDNs in front of them"
)]
pub struct Cli {
    /// The rules file.
    #[arg(
        short = 'c',
        long = "config",
        global = true,
        env = "PURGEWATCH_CONFIG",
        default_value = "/etc/purgewatch/rules.yaml",
        value_name = "FILE"
    )]
    pub config: PathBuf,

    /// Log format (logs go to stderr; the level comes from RUST_LOG, default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Watch the directories and purge what changes (the daemon).
    Run(RunArgs),
    /// Validate the rules file and print every error.
    Check(CheckArgs),
    /// Purge a target now.
    Purge(PurgeArgs),
    /// Show pending purges and the last purge of each target.
    Status(StatusArgs),
    /// Compare each watched tree with the last purge and show what would be purged.
    Plan,
    /// Check what the edge serves for the current tree's URLs; exit 1 if any is stale.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The rule to check (default: every rule with `verify:`).
    pub rule: Option<String>,
    /// How many URLs to check per rule (default: the rule's `verify.sample`).
    #[arg(long, value_name = "N", conflicts_with = "all")]
    pub sample: Option<usize>,
    /// Check every URL of the tree.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Watch and plan as usual, but send nothing and write no state: log each purge instead.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print one JSON object (for scripts and monitoring checks).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Also ask each provider whether the credentials and ids work.
    #[arg(long)]
    pub remote: bool,
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// The target to purge, as named in the rules file.
    pub target: String,
    /// Purge everything the target caches.
    #[arg(long, conflicts_with_all = ["url", "pattern"])]
    pub all: bool,
    /// A URL path to purge (repeatable), like /blog/post.html.
    #[arg(long = "url", value_name = "PATH", conflicts_with = "pattern")]
    pub url: Vec<String>,
    /// A regex pattern to purge (VIMS).
    #[arg(long, value_name = "REGEX")]
    pub pattern: Option<String>,
    /// Wait for the provider's job or task to finish; exit 1 if it failed.
    #[arg(long)]
    pub wait: bool,
    /// Show the request, send nothing.
    #[arg(long)]
    pub dry_run: bool,
}

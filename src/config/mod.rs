//! The rules file: its typed form ([`Config`]), loading and validation.
//!
//! `yaml` turns the text into a tree with positions, `load` walks the tree into a [`Config`],
//! collecting every error as a [`Diagnostic`] that names `file:line:col`.

pub mod include;
mod load;
pub mod yaml;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::Glob;
use regex::Regex;

pub use crate::providers::bunny::Bunny;
pub use crate::providers::cloudflare::Cloudflare;
pub use crate::providers::cloudfront::CloudFront;
pub use crate::providers::command::CommandTarget;
pub use crate::providers::fastly::Fastly;
pub use crate::providers::nginx::Nginx;
pub use crate::providers::sitehost::SiteHost;
pub use crate::providers::target::{PatternSettings, RetryPolicy, Shape, Target, TargetKind};
pub use crate::providers::varnish::{Varnish, VarnishMode};
pub use crate::providers::vims::Vims;
pub use crate::providers::webhook::Webhook;
use crate::secret::Secret;
pub use load::{LoadOptions, did_you_mean, load, load_str, reload, rules_keys};
pub use yaml::Pos;

pub use crate::providers::sitehost::SITEHOST_API_URL;
pub use crate::providers::vims::VIMS_API_URL;

/// A validated rules file.
#[derive(Debug, Clone)]
pub struct Config {
    /// The rules file as it was named on the command line.
    pub source: PathBuf,
    pub state_dir: PathBuf,
    /// How long SIGTERM waits for pending purges to go out.
    pub shutdown_timeout: Duration,
    /// Where `/metrics` and `/healthz` are served; none when absent.
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub targets: Vec<Target>,
    pub rules: Vec<Rule>,
    /// The `include:` globs: the daemon watches their directories and reloads on a change.
    pub includes: Vec<include::Include>,
    /// What each included file defined.
    pub parts: Vec<include::Part>,
    /// A target with several endpoints (a cache fleet) is one target per endpoint, named
    /// `NAME@ENDPOINT`: the name in the rules file → those targets' names.
    pub groups: std::collections::BTreeMap<String, Vec<String>>,
}

impl Config {
    pub fn target(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.name == name)
    }

    /// The targets a name in the rules file stands for: itself, or each endpoint of a fleet.
    pub fn members(&self, name: &str) -> Vec<&Target> {
        match self.groups.get(name) {
            Some(members) => members.iter().filter_map(|m| self.target(m)).collect(),
            None => self.target(name).into_iter().collect(),
        }
    }

    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// Every credential the rules hold (for scrubbing what leaves the daemon).
    pub fn secrets(&self) -> Vec<Secret> {
        self.targets.iter().flat_map(|t| t.kind.secrets()).cloned().collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeMode {
    Changed,
    All,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    /// The watched directory, absolute, as configured (a symlink is kept as a symlink).
    pub watch: PathBuf,
    pub targets: Vec<String>,
    pub include: Vec<Glob>,
    pub exclude: Vec<Glob>,
    pub matches: Vec<Regex>,
    /// Always starts and ends with `/`.
    pub url_prefix: String,
    /// `scheme://host[:port]` where the watched directory is served, without a trailing `/`:
    /// a file's absolute URL is `base_url` + `url_prefix` + its path. Also scopes the rule's
    /// patterns to its host on a cache several sites share, and is `verify.base_url`'s default.
    pub base_url: Option<String>,
    pub index_files: Vec<String>,
    pub purge: PurgeMode,
    /// Check what the edge serves after a purge.
    pub verify: Option<Verify>,
    /// GET the changed URLs through `verify.base_url` after a purge, so the edge fetches them.
    pub warm: bool,
    /// URLs warmed per batch, at most.
    pub warm_limit: usize,
    /// Follow directory symlinks that lead out of the watched tree (off: they are skipped, with
    /// one warning naming the link).
    pub follow_symlinks: bool,
}

impl Rule {
    /// The host (and port, when `base_url` names one) the rule's URLs are served at, when its
    /// `base_url` says: `www.example.com` for `https://www.example.com`.
    pub fn host(&self) -> Option<&str> {
        let url = self.base_url.as_deref()?;
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        Some(rest.split('/').next().unwrap_or(rest))
    }

    /// A rule watching `watch` with every default: no filters, served at `/`, `index.html` as
    /// the index file, targeted purges, no verification.
    /// Its `include`, `exclude` and `match` filters, compiled.
    pub fn filter(&self) -> crate::route::Filter {
        crate::route::Filter::new(&self.include, &self.exclude, &self.matches, self.follow_symlinks)
    }

    pub fn new(name: impl Into<String>, watch: impl Into<PathBuf>) -> Rule {
        Rule {
            name: name.into(),
            watch: watch.into(),
            targets: vec![],
            include: vec![],
            exclude: vec![],
            matches: vec![],
            url_prefix: "/".into(),
            base_url: None,
            index_files: vec!["index.html".into()],
            purge: PurgeMode::Changed,
            verify: None,
            warm: false,
            warm_limit: 200,
            follow_symlinks: false,
        }
    }
}

/// How a rule's purges are verified against the edge.
#[derive(Debug, Clone, PartialEq)]
pub struct Verify {
    /// Where the watched directory is served, without a trailing `/`.
    pub base_url: String,
    /// URLs checked per batch.
    pub sample: usize,
    /// Wait after the provider's job or task has ended.
    pub after: Duration,
    /// Re-purges of URLs still stale before giving up.
    pub repurge: u32,
    pub check: VerifyCheck,
}

/// What makes a URL fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyCheck {
    /// The body is the file's bytes; a deleted file answers 404 or 410.
    Content,
    /// Only the status: 2xx for a file that exists, 404 or 410 for a deleted one (for an origin
    /// that rewrites HTML on the fly).
    Status,
}

/// One problem in a rules file.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub pos: Option<Pos>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pos {
            Some(p) => write!(f, "{}:{}:{}: {}", self.file.display(), p.line, p.col, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // `error` rather than `source`: the message already says what the OS said, and a source
    // would print it a second time in the `{:#}` chain `main` prints.
    #[error("{}: cannot read the rules file: {error} ({})", path.display(), read_hint(error))]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{}", render(.0))]
    Invalid(Vec<Diagnostic>),
}

/// What to do about a rules file that cannot be read: permission denied is most often a person
/// without root reading the packaged /etc/purgewatch/rules.yaml.
fn read_hint(error: &std::io::Error) -> &'static str {
    if error.kind() == std::io::ErrorKind::PermissionDenied {
        "run the command with sudo, or pass a file you may read with -c FILE or PURGEWATCH_CONFIG"
    } else {
        "pass another with -c FILE or set PURGEWATCH_CONFIG"
    }
}

fn render(diags: &[Diagnostic]) -> String {
    diags.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n")
}

/// A loaded rules file and the warnings it gave (problems that `--dry-run` tolerates).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
    /// With [`LoadOptions::collect_secret_problems`]: each target whose secret is unset,
    /// unreadable or empty (its secret is then empty), with what is wrong.
    pub secret_problems: Vec<(String, Diagnostic)>,
    /// At a reload, what kept an included file's new version out (its previous version, if
    /// any, stays in force).
    pub refused: Vec<Diagnostic>,
}

/// The directory a relative path in the rules file is relative to.
pub fn base_dir(rules_file: &Path) -> PathBuf {
    let parent = rules_file.parent().unwrap_or(Path::new(""));
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf())
}

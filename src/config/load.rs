//! Walks the YAML tree into a [`Config`], collecting every error with its position.
//!
//! This file reads the files (the main one and its `include:`s) and holds the loader's state
//! ([`Cx`]); each section has a file of its own:
//!
//! * [`top`]: the main file's own keys and the `defaults` every target inherits.
//! * [`targets`]: the `targets:` section (each type's keys are read by its provider's file,
//!   through `keys::KeyReader`, the loader's side of [`crate::providers::Keys`]).
//! * [`rules`]: the `rules:` section.
//! * [`values`]: one value of any of them (strings, durations, paths, URLs, secrets).
//! * [`paths`]: what the loader asks of the filesystem.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::GlobBuilder;
use regex::Regex;

use super::yaml::{self, Node, Pos, Value};
use super::*;
use crate::providers::BOOLEAN;
use paths::{real_path, system_tree};
use values::{glob_reason, trim_url};

/// How strict loading is.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// `run --dry-run` needs no credentials: an unset `${VAR}` or a missing secret file in a
    /// secret field is a warning, not an error.
    pub dry_run: bool,
    /// Problems with secrets are handed back, each with its target, in
    /// [`Loaded::secret_problems`] instead of failing the load: for a command that uses one
    /// target (`purge`) or asks each target on its own (`check --remote`), which decides.
    pub collect_secret_problems: bool,
    /// A missing `watch` directory is a warning: for a command that only reads the state
    /// (`status`), which must work above all while a tree is missing.
    pub trees_optional: bool,
}

const TOP_KEYS: &[&str] = &[
    "include",
    "state_dir",
    "defaults",
    "targets",
    "rules",
    "shutdown_timeout",
    "metrics_listen",
];
/// What an included file may hold.
const PART_KEYS: &[&str] = &["targets", "rules"];
const TUNING_KEYS: &[&str] = &[
    "debounce",
    "max_delay",
    "retry_attempts",
    "retry_backoff",
    "retry_backoff_max",
    "rate_limit",
    "max_pattern_bytes",
    "widen_threshold",
    "purge_all_threshold",
    "on_failure",
];
const RULE_KEYS: &[&str] = &[
    "name",
    "watch",
    "targets",
    "include",
    "exclude",
    "match",
    "url_prefix",
    "base_url",
    "index_files",
    "purge",
    "verify",
    "warm",
    "warm_limit",
    "follow_symlinks",
];
const VERIFY_KEYS: &[&str] = &["base_url", "sample", "after", "repurge", "check"];

/// Every key the rules file accepts, wherever it goes (the manual page is checked against it).
pub fn rules_keys() -> Vec<&'static str> {
    let mut keys = [TOP_KEYS, TUNING_KEYS, RULE_KEYS, VERIFY_KEYS].concat();
    for t in crate::providers::TYPES {
        keys.push("type");
        keys.extend(t.keys);
    }
    keys
}

/// The largest rules file read: a rules file is a few kilobytes; past this it is a mistake
/// (`-c /dev/zero`, a log file) and is refused before parsing.
pub(super) const MAX_RULES_BYTES: u64 = 1024 * 1024;

/// Reads and validates the rules file at `path`.
pub fn load(path: &Path, opts: LoadOptions) -> Result<Loaded, ConfigError> {
    let text = read_rules(path)?;
    load_str(path, &text, opts, &environment)
}

/// A rules file's text: at most [`MAX_RULES_BYTES`], valid UTF-8.
fn read_rules(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let read_error = |error| ConfigError::Read {
        path: path.to_path_buf(),
        error,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_RULES_BYTES + 1).read_to_end(&mut bytes))
        .map_err(read_error)?;
    let at_start = |message: String| {
        ConfigError::Invalid(vec![Diagnostic {
            file: path.to_path_buf(),
            pos: Some(Pos { line: 1, col: 1 }),
            message,
        }])
    };
    if bytes.len() as u64 > MAX_RULES_BYTES {
        return Err(at_start(format!(
            "the rules file is larger than {} KiB: is this the right file? (a rules file is a few kilobytes)",
            MAX_RULES_BYTES / 1024
        )));
    }
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            // Valid up to here, so this slice is text.
            let before = std::str::from_utf8(good).unwrap_or_default();
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
            let bad = e.as_bytes()[good.len()];
            return Err(ConfigError::Invalid(vec![Diagnostic {
                file: path.to_path_buf(),
                pos: Some(Pos { line, col }),
                message: format!(
                    "the rules file is not valid UTF-8 (byte 0x{bad:02x}): save it as UTF-8 (`iconv -t UTF-8`)"
                ),
            }]));
        }
    };
    Ok(text)
}

/// Where the shipped unit's `LoadCredential=` lines read the secrets from.
pub(super) const PACKAGED_CREDENTIALS: &str = "/etc/purgewatch/credentials";

/// A variable of the process's environment. `$CREDENTIALS_DIRECTORY` is set by systemd for the
/// service only: a command typed by hand (`sudo purgewatch purge cdn --all`) reads the same
/// secrets from the directory the shipped unit loads them from, when it exists.
fn environment(name: &str) -> Option<String> {
    with_credentials_fallback(name, &|k| std::env::var(k).ok(), Path::new(PACKAGED_CREDENTIALS))
}

fn with_credentials_fallback(name: &str, env: &dyn Fn(&str) -> Option<String>, packaged: &Path) -> Option<String> {
    env(name).or_else(|| (name == "CREDENTIALS_DIRECTORY" && packaged.is_dir()).then(|| packaged.display().to_string()))
}

/// Validates rules `text` as if read from `path`, with `env` for `${VAR}`.
pub fn load_str(
    path: &Path,
    text: &str,
    opts: LoadOptions,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigError> {
    load_parts(path, text, opts, env, None)
}

/// Reads the rules file at `path` again for a reload: an included file with an error keeps its
/// version in `previous` (a new file with an error is left out), and its problems come back in
/// [`Loaded::refused`]; an error in the main file fails the whole reload.
pub fn reload(path: &Path, opts: LoadOptions, previous: &Config) -> Result<Loaded, ConfigError> {
    let text = read_rules(path)?;
    load_parts(path, &text, opts, &environment, Some(previous))
}

/// An included file: its path and its tree, or what kept it from being read.
struct Source {
    file: PathBuf,
    root: Result<Node, Diagnostic>,
}

/// The targets and rules of one included file.
type Built = (Vec<Target>, Vec<Rule>);

fn load_parts(
    path: &Path,
    text: &str,
    opts: LoadOptions,
    env: &dyn Fn(&str) -> Option<String>,
    previous: Option<&Config>,
) -> Result<Loaded, ConfigError> {
    let mut cx = Cx::new(path, opts, env);
    let root = match yaml::parse(text) {
        Ok(root) => root,
        Err(e) => {
            cx.error(e.pos, format!("YAML syntax error: {}", e.message));
            return Err(ConfigError::Invalid(cx.errors));
        }
    };
    // Every file's tree first, so that each file knows the other files' target names.
    let (includes, sources) = cx.includes(&root);
    let declared = Declarations {
        main: include::declared(&root),
        parts: sources
            .iter()
            .map(|s| s.root.as_ref().map(include::declared).unwrap_or_default())
            .collect(),
    };
    (cx.other_targets, cx.used_elsewhere) = declared.others(None);
    let config = cx.config(&root);
    let (Some(mut config), Some(defaults)) = (config, cx.defaults.clone()) else {
        cx.errors.sort_by_key(|d| d.pos.map(|p| (p.line, p.col)));
        return Err(ConfigError::Invalid(cx.errors));
    };
    config.includes = includes;
    let mut parts = Parts {
        defined: Defined::of(&declared.main, path),
        refused: Vec::new(),
        errors: Vec::new(),
        previous,
    };
    for (i, source) in sources.into_iter().enumerate() {
        let mut pcx = Cx::new(&source.file, opts, env);
        (pcx.other_targets, pcx.used_elsewhere) = declared.others(Some(i));
        let built = match &source.root {
            Ok(root) => pcx.part(root, &defaults, &config.state_dir),
            Err(d) => {
                pcx.errors.push(d.clone());
                None
            }
        };
        parts.defined.refuse_twice(&mut pcx, &declared.parts[i]);
        cx.take_notes(&mut pcx);
        if let Some((targets, rules)) = parts.take(built, pcx.errors, &source.file) {
            config.parts.push(include::Part {
                file: source.file.clone(),
                targets: targets.iter().map(|t| t.name.clone()).collect(),
                rules: rules.iter().map(|r| r.name.clone()).collect(),
            });
            config.targets.extend(targets);
            config.rules.extend(rules);
        }
    }
    cx.base_urls_needed(&config);
    // A rule naming a fleet purges through each of its endpoints.
    config.groups = std::mem::take(&mut cx.groups);
    expand_fleets(&mut config);
    drop_orphans(&mut config, path, &mut parts.refused);
    cx.finish(config, parts)
}

/// What every file's tree declares, read before any file is built.
struct Declarations {
    main: include::Declared,
    /// Each included file's, in order.
    parts: Vec<include::Declared>,
}

impl Declarations {
    /// The target names every file but `skip` (an included file's index; `None`: the main
    /// file) declares, and the targets their rules use.
    fn others(&self, skip: Option<usize>) -> (Vec<String>, BTreeSet<String>) {
        let mut names = Vec::new();
        let mut used = BTreeSet::new();
        let all = std::iter::once((None, &self.main)).chain(self.parts.iter().enumerate().map(|(i, d)| (Some(i), d)));
        for (i, d) in all {
            if i == skip {
                continue;
            }
            names.extend(d.targets.iter().map(|(n, _)| n.clone()));
            used.extend(d.used.iter().cloned());
        }
        (names, used)
    }
}

/// Target and rule names defined so far, and in which file: the main file's, then each
/// included file's in turn.
struct Defined {
    targets: BTreeMap<String, PathBuf>,
    rules: BTreeMap<String, PathBuf>,
}

impl Defined {
    fn of(main: &include::Declared, path: &Path) -> Defined {
        let names = |list: &[(String, Pos)]| list.iter().map(|(n, _)| (n.clone(), path.to_path_buf())).collect();
        Defined {
            targets: names(&main.targets),
            rules: names(&main.rules),
        }
    }

    /// An error of the file read by `pcx` for each name it defines that another file did.
    fn refuse_twice(&self, pcx: &mut Cx, declared: &include::Declared) {
        let lists = [
            ("target", &declared.targets, &self.targets),
            ("rule", &declared.rules, &self.rules),
        ];
        for (what, names, defined) in lists {
            for (name, pos) in names {
                if let Some(other) = defined.get(name) {
                    pcx.error(
                        *pos,
                        format!(
                            "{what} \"{name}\" is defined twice (also in {}): names are unique across every rules file",
                            other.display()
                        ),
                    );
                }
            }
        }
    }
}

/// The included files as they are taken, one by one.
struct Parts<'p> {
    defined: Defined,
    /// On a reload, the problems of files whose previous version stays in force.
    refused: Vec<Diagnostic>,
    /// On a first load, every included file's errors.
    errors: Vec<Diagnostic>,
    previous: Option<&'p Config>,
}

impl Parts<'_> {
    /// What an included file brings: what it `built` when it has no `errors`; else, on a
    /// reload, its previous version (a new file stays out) and its errors are refused; on a
    /// first load, nothing, and its errors fail the load.
    fn take(&mut self, built: Option<Built>, mut errors: Vec<Diagnostic>, file: &Path) -> Option<Built> {
        let part = match built {
            Some(built) if errors.is_empty() => Some(built),
            _ => match self.previous {
                Some(prev) => {
                    self.refused.append(&mut errors);
                    prev.parts.iter().find(|p| p.file == file).map(|p| {
                        let targets = prev.targets.iter().filter(|t| p.targets.contains(&t.name));
                        let rules = prev.rules.iter().filter(|r| p.rules.contains(&r.name));
                        (targets.cloned().collect(), rules.cloned().collect())
                    })
                }
                None => {
                    self.errors.append(&mut errors);
                    None
                }
            },
        };
        if let Some((targets, rules)) = &part {
            for t in targets {
                self.defined
                    .targets
                    .entry(t.name.clone())
                    .or_insert_with(|| file.to_path_buf());
            }
            for r in rules {
                self.defined
                    .rules
                    .entry(r.name.clone())
                    .or_insert_with(|| file.to_path_buf());
            }
        }
        part
    }
}

impl Cx<'_> {
    /// The load's outcome: `config`, or every error (the main file's, then each included
    /// file's).
    fn finish(mut self, config: Config, mut parts: Parts) -> Result<Loaded, ConfigError> {
        // Reported file by file, in the order a reader meets them in each (a stable sort keeps
        // the order of several problems at one position).
        self.errors.sort_by_key(|d| d.pos.map(|p| (p.line, p.col)));
        self.errors.append(&mut parts.errors);
        self.warnings
            .sort_by_key(|d| (d.file.clone(), d.pos.map(|p| (p.line, p.col))));
        if !self.errors.is_empty() {
            return Err(ConfigError::Invalid(self.errors));
        }
        Ok(Loaded {
            config,
            warnings: self.warnings,
            secret_problems: self.secret_problems,
            refused: parts.refused,
        })
    }

    /// Takes what reading an included file (`pcx`) noted that is the whole load's: its warnings
    /// and secret problems, and, when it has no error, its fleets and rule positions. Its
    /// errors are sorted in the order a reader meets them.
    fn take_notes(&mut self, pcx: &mut Cx) {
        self.warnings.append(&mut pcx.warnings);
        self.secret_problems.append(&mut pcx.secret_problems);
        if pcx.errors.is_empty() {
            self.groups.append(&mut pcx.groups);
            self.rule_positions.append(&mut pcx.rule_positions);
        }
        pcx.errors.sort_by_key(|d| d.pos.map(|p| (p.line, p.col)));
    }

    /// An error for each rule without `base_url:` whose targets purge absolute URLs.
    fn base_urls_needed(&mut self, config: &Config) {
        for r in config.rules.iter().filter(|r| r.base_url.is_none()) {
            let needs: Vec<&str> = r
                .targets
                .iter()
                .filter_map(|t| config.target(t))
                .filter(|t| t.kind.needs_base_url())
                .map(|t| t.name.as_str())
                .collect();
            if let (Some(first), Some((_, file, pos))) =
                (needs.first(), self.rule_positions.iter().find(|(n, _, _)| n == &r.name))
            {
                self.errors.push(Diagnostic {
                    file: file.clone(),
                    pos: Some(*pos),
                    message: format!(
                        "rule \"{}\": target \"{first}\" purges absolute URLs: set the rule's `base_url:` (where the site is served, like https://www.example.com)",
                        r.name
                    ),
                });
            }
        }
    }
}

/// A rule naming a fleet purges through each of its endpoints.
fn expand_fleets(config: &mut Config) {
    for r in &mut config.rules {
        r.targets = r
            .targets
            .iter()
            .flat_map(|t| config.groups.get(t).cloned().unwrap_or_else(|| vec![t.clone()]))
            .collect();
    }
}

/// A rule that names a target only a refused file defined cannot stand either: it is left out,
/// and said in `refused`.
fn drop_orphans(config: &mut Config, path: &Path, refused: &mut Vec<Diagnostic>) {
    let orphans: Vec<String> = config
        .rules
        .iter()
        .filter(|r| r.targets.iter().any(|t| config.target(t).is_none()))
        .map(|r| r.name.clone())
        .collect();
    for name in &orphans {
        refused.push(Diagnostic {
            file: path.to_path_buf(),
            pos: None,
            message: format!("rule \"{name}\" names a target of a rules file that was refused: it is left out"),
        });
    }
    config.rules.retain(|r| !orphans.contains(&r.name));
}

/// Settings every target inherits unless it sets its own.
#[derive(Clone)]
struct Tuning {
    debounce: Duration,
    max_delay: Duration,
    retry: RetryPolicy,
    rate_limit: f64,
    patterns: PatternSettings,
    on_failure: Option<Vec<String>>,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            debounce: Duration::from_secs(2),
            max_delay: Duration::from_secs(30),
            retry: RetryPolicy {
                attempts: 8,
                backoff: Duration::from_secs(1),
                backoff_max: Duration::from_secs(60),
            },
            rate_limit: 10.0,
            patterns: PatternSettings {
                max_bytes: 4096,
                widen_threshold: 1.0,
                all_threshold: 0.5,
            },
            on_failure: None,
        }
    }
}

struct Cx<'a> {
    file: PathBuf,
    base: PathBuf,
    env: &'a dyn Fn(&str) -> Option<String>,
    opts: LoadOptions,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    secret_problems: Vec<(String, Diagnostic)>,
    /// The target being read, for its secret problems.
    target: Option<String>,
    /// Targets the other rules files declare (a rule may name a target of any file).
    other_targets: Vec<String>,
    /// Targets the other rules files' rules use (a target is unused only if no file uses it).
    used_elsewhere: BTreeSet<String>,
    /// The main file's `defaults`, which every file's targets inherit.
    defaults: Option<Tuning>,
    /// The endpoints of the cache target being read (see `Cx::fleet`).
    fleet_endpoints: Vec<String>,
    /// Fleets read so far: name → one target per endpoint.
    groups: BTreeMap<String, Vec<String>>,
    /// Where each rule read so far stands (for checks that need every file's targets).
    rule_positions: Vec<(String, PathBuf, Pos)>,
}

type Entries<'n> = &'n [(Node, Node)];

impl<'a> Cx<'a> {
    fn new(file: &Path, opts: LoadOptions, env: &'a dyn Fn(&str) -> Option<String>) -> Cx<'a> {
        Cx {
            file: file.to_path_buf(),
            base: base_dir(file),
            env,
            opts,
            errors: vec![],
            warnings: vec![],
            secret_problems: vec![],
            target: None,
            other_targets: vec![],
            used_elsewhere: BTreeSet::new(),
            defaults: None,
            fleet_endpoints: vec![],
            groups: BTreeMap::new(),
            rule_positions: vec![],
        }
    }
}

impl Cx<'_> {
    /// The main file's `include:` globs, each expanded, and every file they take read and
    /// parsed (a file that cannot be is an error of that file).
    fn includes(&mut self, root: &Node) -> (Vec<include::Include>, Vec<Source>) {
        let Some(node) = include::globs(root) else {
            return (vec![], vec![]);
        };
        let mut includes = Vec::new();
        let mut sources: Vec<Source> = Vec::new();
        for (pattern, pos) in self.strings(node, "include") {
            let inc = match include::parse(&pattern, &self.base) {
                Ok(inc) => inc,
                Err(e) => {
                    self.error(pos, format!("include: {e}"));
                    continue;
                }
            };
            match inc.files() {
                Ok(files) => {
                    for file in files {
                        if file == self.file || sources.iter().any(|s| s.file == file) {
                            continue;
                        }
                        let root = read_rules(&file)
                            .map_err(|e| Diagnostic {
                                file: file.clone(),
                                pos: Some(Pos { line: 1, col: 1 }),
                                message: e.to_string(),
                            })
                            .and_then(|text| {
                                yaml::parse(&text).map_err(|e| Diagnostic {
                                    file: file.clone(),
                                    pos: Some(e.pos),
                                    message: format!("YAML syntax error: {}", e.message),
                                })
                            });
                        sources.push(Source { file, root });
                    }
                }
                // A directory not made yet takes no file (it is watched once it exists).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => self.error(pos, format!("include: {}: cannot list it: {e}", inc.dir.display())),
            }
            includes.push(inc);
        }
        (includes, sources)
    }

    /// An included file: its targets (inheriting the main file's `defaults`) and rules.
    fn part(&mut self, root: &Node, defaults: &Tuning, state_dir: &Path) -> Option<Built> {
        if root.is_null() {
            return Some((vec![], vec![]));
        }
        let top = self.mapping(root, "an included rules file")?;
        let top = self.keys(
            top,
            PART_KEYS,
            "an included rules file (it holds `targets:` and `rules:` only)",
        );
        let (mut targets, mut declared, mut rules) = (vec![], vec![], vec![]);
        let mut targets_node = None;
        for (key, _, v) in &top {
            if *key == "targets" {
                targets_node = Some(*v);
                (targets, declared) = self.targets(v, defaults);
            }
        }
        let mut names: Vec<&str> = declared.iter().map(String::as_str).collect();
        let others = self.other_targets.clone();
        names.extend(others.iter().map(String::as_str));
        for (key, _, v) in &top {
            if *key == "rules" {
                rules = self.rules(v, &names);
            }
        }
        self.unused_targets(targets_node, &rules);
        self.state_dir_outside(state_dir, None, &rules);
        Some((targets, rules.into_iter().map(|(r, _)| r).collect()))
    }

    fn error(&mut self, pos: Pos, message: impl Into<String>) {
        self.errors.push(Diagnostic {
            file: self.file.clone(),
            pos: Some(pos),
            message: message.into(),
        });
    }

    fn warn(&mut self, pos: Pos, message: impl Into<String>) {
        self.warnings.push(Diagnostic {
            file: self.file.clone(),
            pos: Some(pos),
            message: message.into(),
        });
    }
}

/// ` (did you mean "x"?)` when a candidate is close enough to `word`, else an empty string.
pub fn did_you_mean<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    let best = candidates
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((_, c)) => format!(" (did you mean \"{c}\"?)"),
        None => String::new(),
    }
}

mod keys;
mod paths;
mod rules;
mod targets;
#[cfg(test)]
mod tests;
mod top;
mod values;

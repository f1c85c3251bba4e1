//! Walks the YAML tree into a [`Config`], collecting every error with its position.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::GlobBuilder;
use regex::Regex;

use super::yaml::{self, Node, Pos, Value};
use super::*;

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
const BOOLEAN: &[(&str, bool)] = &[("true", true), ("false", false)];
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
    let main_declared = include::declared(&root);
    let declared: Vec<include::Declared> = sources
        .iter()
        .map(|s| s.root.as_ref().map(include::declared).unwrap_or_default())
        .collect();
    let others = |skip: Option<usize>| -> (Vec<String>, BTreeSet<String>) {
        let mut names = Vec::new();
        let mut used = BTreeSet::new();
        let all = std::iter::once((None, &main_declared)).chain(declared.iter().enumerate().map(|(i, d)| (Some(i), d)));
        for (i, d) in all {
            if i == skip {
                continue;
            }
            names.extend(d.targets.iter().map(|(n, _)| n.clone()));
            used.extend(d.used.iter().cloned());
        }
        (names, used)
    };
    (cx.other_targets, cx.used_elsewhere) = others(None);
    let config = cx.config(&root);
    let (Some(mut config), Some(defaults)) = (config, cx.defaults.clone()) else {
        cx.errors.sort_by_key(|d| d.pos.map(|p| (p.line, p.col)));
        return Err(ConfigError::Invalid(cx.errors));
    };
    config.includes = includes;
    let mut refused = Vec::new();
    // Names already defined, and where: the main file's, then each part's in turn.
    let mut defined_targets: BTreeMap<String, PathBuf> = main_declared
        .targets
        .iter()
        .map(|(n, _)| (n.clone(), path.to_path_buf()))
        .collect();
    let mut defined_rules: BTreeMap<String, PathBuf> = main_declared
        .rules
        .iter()
        .map(|(n, _)| (n.clone(), path.to_path_buf()))
        .collect();
    let mut part_errors = Vec::new();
    for (i, source) in sources.into_iter().enumerate() {
        let mut pcx = Cx::new(&source.file, opts, env);
        (pcx.other_targets, pcx.used_elsewhere) = others(Some(i));
        let built = match &source.root {
            Ok(root) => pcx.part(root, &defaults, &config.state_dir),
            Err(d) => {
                pcx.errors.push(d.clone());
                None
            }
        };
        for (name, pos) in &declared[i].targets {
            if let Some(other) = defined_targets.get(name) {
                pcx.error(
                    *pos,
                    format!(
                        "target \"{name}\" is defined twice (also in {}): names are unique across every rules file",
                        other.display()
                    ),
                );
            }
        }
        for (name, pos) in &declared[i].rules {
            if let Some(other) = defined_rules.get(name) {
                pcx.error(
                    *pos,
                    format!(
                        "rule \"{name}\" is defined twice (also in {}): names are unique across every rules file",
                        other.display()
                    ),
                );
            }
        }
        cx.warnings.append(&mut pcx.warnings);
        cx.secret_problems.append(&mut pcx.secret_problems);
        if pcx.errors.is_empty() {
            cx.groups.append(&mut pcx.groups);
            cx.rule_positions.append(&mut pcx.rule_positions);
        }
        pcx.errors.sort_by_key(|d| d.pos.map(|p| (p.line, p.col)));
        let part: Option<Built> = match built {
            Some(built) if pcx.errors.is_empty() => Some(built),
            _ => match previous {
                // A reload: the file's previous version stays in force (a new file stays out).
                Some(prev) => {
                    refused.append(&mut pcx.errors);
                    prev.parts.iter().find(|p| p.file == source.file).map(|p| {
                        (
                            prev.targets
                                .iter()
                                .filter(|t| p.targets.contains(&t.name))
                                .cloned()
                                .collect(),
                            prev.rules
                                .iter()
                                .filter(|r| p.rules.contains(&r.name))
                                .cloned()
                                .collect(),
                        )
                    })
                }
                None => {
                    part_errors.append(&mut pcx.errors);
                    None
                }
            },
        };
        if let Some((targets, rules)) = part {
            for t in &targets {
                defined_targets
                    .entry(t.name.clone())
                    .or_insert_with(|| source.file.clone());
            }
            for r in &rules {
                defined_rules
                    .entry(r.name.clone())
                    .or_insert_with(|| source.file.clone());
            }
            config.parts.push(include::Part {
                file: source.file.clone(),
                targets: targets.iter().map(|t| t.name.clone()).collect(),
                rules: rules.iter().map(|r| r.name.clone()).collect(),
            });
            config.targets.extend(targets);
            config.rules.extend(rules);
        }
    }
    // A target that purges absolute URLs needs the rule's base_url.
    for r in config.rules.iter().filter(|r| r.base_url.is_none()) {
        let needs: Vec<&str> = r
            .targets
            .iter()
            .filter_map(|t| config.target(t))
            .filter(|t| t.kind.needs_base_url())
            .map(|t| t.name.as_str())
            .collect();
        if let (Some(first), Some((_, file, pos))) =
            (needs.first(), cx.rule_positions.iter().find(|(n, _, _)| n == &r.name))
        {
            cx.errors.push(Diagnostic {
                file: file.clone(),
                pos: Some(*pos),
                message: format!(
                    "rule \"{}\": target \"{first}\" purges absolute URLs: set the rule's `base_url:` (where the site is served, like https://www.example.com)",
                    r.name
                ),
            });
        }
    }
    // A rule naming a fleet purges through each of its endpoints.
    config.groups = std::mem::take(&mut cx.groups);
    for r in &mut config.rules {
        r.targets = r
            .targets
            .iter()
            .flat_map(|t| config.groups.get(t).cloned().unwrap_or_else(|| vec![t.clone()]))
            .collect();
    }
    // A rule that names a target only a refused file defined cannot stand either.
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
    // Reported file by file, in the order a reader meets them in each (a stable sort keeps the
    // order of several problems at one position).
    cx.errors.sort_by_key(|d| d.pos.map(|p| (p.line, p.col)));
    cx.errors.append(&mut part_errors);
    cx.warnings
        .sort_by_key(|d| (d.file.clone(), d.pos.map(|p| (p.line, p.col))));
    if !cx.errors.is_empty() {
        return Err(ConfigError::Invalid(cx.errors));
    }
    Ok(Loaded {
        config,
        warnings: cx.warnings,
        secret_problems: cx.secret_problems,
        refused,
    })
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

    /// A warning for each target of `targets_node` that no rule of any file names.
    fn unused_targets(&mut self, targets_node: Option<&Node>, rules: &[(Rule, Pos)]) {
        let Some(Value::Map(entries)) = targets_node.map(|n| &n.value) else {
            return;
        };
        for (k, _) in entries {
            let Some(name) = k.as_scalar() else { continue };
            let used =
                rules.iter().any(|(r, _)| r.targets.iter().any(|t| t == name)) || self.used_elsewhere.contains(name);
            if !used {
                self.warn(
                    k.pos,
                    format!("target \"{name}\" is not used by any rule: add it to a rule's `targets:`, or remove it (and, under systemd, its LoadCredential= line)"),
                );
            }
        }
    }

    /// An error for each rule whose watched tree holds the state directory.
    fn state_dir_outside(&mut self, dir: &Path, state_pos: Option<Pos>, rules: &[(Rule, Pos)]) {
        let state = real_path(dir);
        for (rule, watch_pos) in rules {
            let root = real_path(&rule.watch);
            if state.starts_with(&root) {
                self.error(
                    state_pos.unwrap_or(*watch_pos),
                    format!(
                        "rule \"{}\" watches {}, which holds the state directory {}: the daemon would purge its own writes; set `state_dir:` outside every watched tree (like /var/lib/purgewatch)",
                        rule.name,
                        rule.watch.display(),
                        dir.display()
                    ),
                );
            }
        }
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

    /// A secret problem: an error, or a warning under `--dry-run`.
    fn secret_problem(&mut self, pos: Pos, message: String) {
        if self.opts.dry_run {
            self.warn(pos, format!("{message} (ignored: --dry-run sends nothing)"));
        } else if self.opts.collect_secret_problems
            && let Some(target) = self.target.clone()
        {
            let d = Diagnostic {
                file: self.file.clone(),
                pos: Some(pos),
                message,
            };
            self.secret_problems.push((target, d));
        } else {
            self.error(pos, message);
        }
    }

    fn mapping<'n>(&mut self, node: &'n Node, what: &str) -> Option<Entries<'n>> {
        match &node.value {
            Value::Map(items) => Some(items),
            _ if node.is_null() => Some(&[]),
            _ => {
                self.error(
                    node.pos,
                    format!("{what} must be a mapping of keys to values, found {}", node.kind_name()),
                );
                None
            }
        }
    }

    /// Reports unknown and duplicate keys; returns the known ones in order.
    fn keys<'n>(&mut self, entries: Entries<'n>, allowed: &[&str], what: &str) -> Vec<(&'n str, &'n Node, &'n Node)> {
        let mut seen: HashSet<&str> = HashSet::new();
        let mut out = Vec::new();
        for (k, v) in entries {
            let Some(key) = k.as_scalar() else {
                self.error(k.pos, format!("{what}: keys must be plain names"));
                continue;
            };
            if !allowed.contains(&key) {
                let hint = did_you_mean(key, allowed.iter().copied());
                self.error(k.pos, format!("{what}: unknown key `{key}`{hint}"));
                continue;
            }
            if !seen.insert(key) {
                self.error(k.pos, format!("{what}: `{key}` is set twice (remove one)"));
                continue;
            }
            out.push((key, k, v));
        }
        out
    }

    /// A scalar string with `${VAR}` replaced. `secret` makes an unset variable tolerable in
    /// dry-run mode (the value is then empty).
    fn string(&mut self, node: &Node, what: &str, secret: bool) -> Option<String> {
        let Some(text) = node.as_scalar().filter(|_| !node.is_null()) else {
            self.error(
                node.pos,
                format!("{what} must be a single value, found {}", node.kind_name()),
            );
            return None;
        };
        match interpolate(text, self.env) {
            Ok(s) => Some(s),
            Err(var) => {
                let msg =
                    format!("{what}: environment variable `{var}` is not set (export it before starting purgewatch)");
                if secret {
                    // A warning under --dry-run, and the secret stays empty: reading a file at
                    // a half-substituted path would only add a confusing second message.
                    self.secret_problem(node.pos, msg);
                    None
                } else {
                    self.error(node.pos, msg);
                    None
                }
            }
        }
    }

    fn strings(&mut self, node: &Node, what: &str) -> Vec<(String, Pos)> {
        match &node.value {
            Value::Seq(items) => items
                .iter()
                .filter_map(|n| self.string(n, what, false).map(|s| (s, n.pos)))
                .collect(),
            Value::Scalar { .. } if !node.is_null() => self
                .string(node, what, false)
                .map(|s| (s, node.pos))
                .into_iter()
                .collect(),
            _ if node.is_null() => vec![],
            _ => {
                self.error(node.pos, format!("{what} must be a list, like [\"**/*.html\"]"));
                vec![]
            }
        }
    }

    fn duration(&mut self, node: &Node, what: &str) -> Option<Duration> {
        let s = self.string(node, what, false)?;
        match humantime::parse_duration(s.trim()) {
            Ok(d) => Some(d),
            Err(e) => {
                let hint = if s.trim().chars().all(|c| c.is_ascii_digit()) {
                    format!(" (add a unit: `{}s` or `{}ms`)", s.trim(), s.trim())
                } else {
                    " (write it like `500ms`, `2s` or `1m30s`)".into()
                };
                self.error(node.pos, format!("{what}: `{s}` is not a duration: {e}{hint}"));
                None
            }
        }
    }

    fn number<T: std::str::FromStr>(&mut self, node: &Node, what: &str, expect: &str) -> Option<T> {
        let s = self.string(node, what, false)?;
        match s.trim().parse::<T>() {
            Ok(v) => Some(v),
            Err(_) => {
                self.error(node.pos, format!("{what}: `{s}` is not {expect}"));
                None
            }
        }
    }

    fn share(&mut self, node: &Node, what: &str) -> Option<f64> {
        let v: f64 = self.number(node, what, "a number between 0 and 1")?;
        if (0.0..=1.0).contains(&v) {
            Some(v)
        } else {
            self.error(node.pos, format!("{what}: {v} is not between 0 and 1 (0.8 means 80%)"));
            None
        }
    }

    fn path(&mut self, node: &Node, what: &str, secret: bool) -> Option<PathBuf> {
        let s = self.string(node, what, secret)?;
        Some(self.resolve(&s))
    }

    fn resolve(&self, s: &str) -> PathBuf {
        let expanded = match (s.strip_prefix("~/"), std::env::var_os("HOME")) {
            (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
            _ => PathBuf::from(s),
        };
        if expanded.is_absolute() {
            expanded
        } else {
            self.base.join(expanded)
        }
    }

    /// A provider's API URL: absolute, http or https, with no user name or password in it (the
    /// URL is printed in logs and errors; credentials belong in `api_key`/`token`). The value is
    /// never quoted back, in case it holds a password.
    fn api_url(&mut self, node: &Node, what: &str) -> Option<String> {
        let s = self.string(node, what, false)?;
        let s = s.trim();
        let problem = match reqwest::Url::parse(s) {
            Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                format!("the scheme `{}` is not http or https", u.scheme())
            }
            Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                "it carries a user name or password: remove it (`https://host/...`) and put the credential in the target's api_key/token".into()
            }
            Ok(u) if u.host_str().is_none_or(str::is_empty) => "it has no host".into(),
            Ok(_) => return Some(s.to_string()),
            Err(e) => format!("it is not an absolute URL ({e})"),
        };
        self.error(
            node.pos,
            format!("{what}: {problem}; write it like https://api.example.com/path"),
        );
        None
    }

    /// One of a few words (`changed` or `all`, `true` or `false`); anything else is an error
    /// that lists them, with a "did you mean" hint.
    fn choice<T: Copy>(&mut self, node: &Node, what: &str, options: &[(&str, T)]) -> Option<T> {
        let word = self.string(node, what, false)?;
        if let Some((_, v)) = options.iter().find(|(w, _)| *w == word) {
            return Some(*v);
        }
        let names: Vec<String> = options.iter().map(|(w, _)| format!("`{w}`")).collect();
        let hint = did_you_mean(&word, options.iter().map(|(w, _)| *w));
        self.error(
            node.pos,
            format!("{what}: `{word}` must be {}{hint}", names.join(" or ")),
        );
        None
    }

    /// A rule's `base_url`: `scheme://host[:port]`, nothing after the host but a `/`.
    fn base_url(&mut self, node: &Node, what: &str) -> Option<String> {
        let url = self.api_url(node, what)?;
        // Scheme and host are case-insensitive; cache keys hold them in lower case.
        let url = url.trim_end_matches('/').to_ascii_lowercase();
        let after_scheme = url.split_once("://").map_or("", |(_, r)| r);
        if after_scheme.contains(['/', '?', '#']) || after_scheme.is_empty() {
            self.error(
                node.pos,
                format!("{what}: `{url}` must be scheme://host[:port] only, like https://www.example.com (put a path in `url_prefix:`)"),
            );
            return None;
        }
        Some(url)
    }

    /// A rule's `verify:` mapping.
    fn verify(&mut self, node: &Node, what: &str) -> Option<Verify> {
        let entries = self.mapping(node, what)?;
        let mut v = Verify {
            base_url: String::new(),
            sample: 20,
            after: Duration::from_secs(2),
            repurge: 2,
            check: VerifyCheck::Content,
        };
        let n_errors = self.errors.len();
        for (key, _, val) in self.keys(entries, VERIFY_KEYS, what) {
            let kw = format!("{what}: {key}");
            match key {
                "base_url" => {
                    if let Some(u) = self.api_url(val, &kw) {
                        v.base_url = u.trim_end_matches('/').to_string();
                    }
                }
                "sample" => {
                    if let Some(n) = self.number::<usize>(val, &kw, "a number of URLs") {
                        v.sample = n
                    }
                }
                "after" => {
                    if let Some(d) = self.duration(val, &kw) {
                        v.after = d
                    }
                }
                "repurge" => {
                    if let Some(n) = self.number::<u32>(val, &kw, "a number of re-purges") {
                        v.repurge = n
                    }
                }
                "check" => {
                    let options = [("content", VerifyCheck::Content), ("status", VerifyCheck::Status)];
                    if let Some(c) = self.choice(val, &kw, &options) {
                        v.check = c
                    }
                }
                _ => {}
            }
        }
        (self.errors.len() == n_errors).then_some(v)
    }

    /// `metrics_listen`: an address and port. Anything but loopback is served, with a warning
    /// (the metrics name targets and rules; the health check is unauthenticated).
    fn listen_address(&mut self, node: &Node) -> Option<std::net::SocketAddr> {
        let s = self.string(node, "metrics_listen", false)?;
        match s.trim().parse::<std::net::SocketAddr>() {
            Ok(addr) => {
                if !addr.ip().is_loopback() {
                    self.warn(
                        node.pos,
                        format!("metrics_listen: {addr} is reachable from other hosts: /metrics and /healthz have no authentication (use 127.0.0.1 and a local scraper, or a firewall)"),
                    );
                }
                Some(addr)
            }
            Err(_) => {
                self.error(
                    node.pos,
                    format!("metrics_listen: `{s}` is not an address and port, like 127.0.0.1:9780 or [::1]:9780"),
                );
                None
            }
        }
    }

    /// A provider id that is a whole number (`client_id`, `cdn_id`, a VIMS host id).
    fn id(&mut self, node: Option<&Node>, what: &str, key: &str, value: String) -> Option<String> {
        let v = value.trim();
        if !v.is_empty() && v.len() <= 18 && v.bytes().all(|b| b.is_ascii_digit()) {
            return Some(v.to_string());
        }
        let hint = if key == "host" { " or `all`" } else { "" };
        if let Some(n) = node {
            self.error(
                n.pos,
                format!("{what}: {key} `{value}` is not a whole number{hint} (the provider's id, like 7)"),
            );
        }
        None
    }

    fn tuning(&mut self, key: &str, v: &Node, t: &mut Tuning, what: &str) {
        let what = format!("{what}: {key}");
        match key {
            "debounce" => {
                if let Some(d) = self.duration(v, &what) {
                    t.debounce = d
                }
            }
            "max_delay" => {
                if let Some(d) = self.duration(v, &what) {
                    t.max_delay = d
                }
            }
            "retry_attempts" => match self.number::<u32>(v, &what, "a whole number of attempts") {
                Some(0) => self.error(v.pos, format!("{what}: must be at least 1 (1 means no retry)")),
                Some(n) => t.retry.attempts = n,
                None => {}
            },
            "retry_backoff" => {
                if let Some(d) = self.duration(v, &what) {
                    t.retry.backoff = d
                }
            }
            "retry_backoff_max" => {
                if let Some(d) = self.duration(v, &what) {
                    t.retry.backoff_max = d
                }
            }
            "rate_limit" => match self.number::<f64>(v, &what, "a number of requests per second") {
                Some(r) if r > 0.0 && r.is_finite() => t.rate_limit = r,
                Some(_) => self.error(v.pos, format!("{what}: must be more than 0 requests per second")),
                None => {}
            },
            "max_pattern_bytes" => match self.number::<usize>(v, &what, "a number of bytes") {
                Some(n) if n >= 64 => t.patterns.max_bytes = n,
                Some(_) => self.error(v.pos, format!("{what}: must be at least 64 bytes")),
                None => {}
            },
            "widen_threshold" => {
                if let Some(x) = self.share(v, &what) {
                    t.patterns.widen_threshold = x
                }
            }
            "purge_all_threshold" => {
                if let Some(x) = self.share(v, &what) {
                    t.patterns.all_threshold = x
                }
            }
            "on_failure" => {
                let argv: Vec<String> = self.strings(v, &what).into_iter().map(|(s, _)| s).collect();
                match argv.first() {
                    _ if v.is_null() => t.on_failure = None,
                    Some(program) if !program.trim().is_empty() => match runnable(program) {
                        Ok(()) => t.on_failure = Some(argv),
                        Err(why) => self.error(v.pos, format!("{what}: {program}: {why}")),
                    },
                    _ => self.error(
                        v.pos,
                        format!(
                            "{what}: name a program and its arguments, like [/usr/local/bin/notify-ops, --channel, web]"
                        ),
                    ),
                }
            }
            _ => unreachable!("tuning key {key} listed but not handled"),
        }
    }

    fn config(&mut self, root: &Node) -> Option<Config> {
        if root.is_null() {
            self.error(
                root.pos,
                "the rules file is empty: it needs `targets:` and `rules:` (see rules.example.yaml)",
            );
            return None;
        }
        let top = self.mapping(root, "the rules file")?;
        let top = self.keys(top, TOP_KEYS, "top level");
        let mut defaults = Tuning::default();
        let mut state_dir = None;
        let mut shutdown_timeout = Duration::from_secs(10);
        let mut metrics_listen = None;
        let (mut targets_node, mut rules_node) = (None, None);
        for (key, _k, v) in &top {
            match *key {
                "state_dir" => state_dir = self.path(v, "state_dir", false),
                "shutdown_timeout" => {
                    if let Some(d) = self.duration(v, "shutdown_timeout") {
                        shutdown_timeout = d
                    }
                }
                "defaults" => {
                    if let Some(entries) = self.mapping(v, "defaults") {
                        for (key, _, v) in self.keys(entries, TUNING_KEYS, "defaults") {
                            self.tuning(key, v, &mut defaults, "defaults");
                        }
                    }
                }
                "metrics_listen" => metrics_listen = self.listen_address(v),
                "targets" => targets_node = Some(*v),
                "rules" => rules_node = Some(*v),
                // Read before this file (see `Cx::includes`).
                "include" => {}
                _ => {}
            }
        }
        self.defaults = Some(defaults.clone());
        let includes = top.iter().any(|(k, _, _)| *k == "include");
        let (targets, declared) = match targets_node {
            Some(node) => self.targets(node, &defaults),
            None if includes => (vec![], vec![]),
            None => {
                self.error(
                    root.pos,
                    "no `targets:` section: name at least one sitehost or vims target",
                );
                (vec![], vec![])
            }
        };
        // Rules are checked against every declared name (of every file): a target with errors
        // of its own is reported once, not again as "unknown" in each rule that names it.
        let mut names: Vec<&str> = declared.iter().map(String::as_str).collect();
        let others = self.other_targets.clone();
        names.extend(others.iter().map(String::as_str));
        let rules = match rules_node {
            Some(node) => self.rules(node, &names),
            None if includes => vec![],
            None => {
                self.error(root.pos, "no `rules:` section: add a rule that watches a directory");
                vec![]
            }
        };
        if !rules.is_empty() || !self.used_elsewhere.is_empty() {
            self.unused_targets(targets_node, &rules);
        }
        let state_dir = state_dir.or_else(|| default_state_dir(self.env));
        if let Some(dir) = &state_dir {
            let state_pos = top.iter().find(|(k, _, _)| *k == "state_dir").map(|(_, _, v)| v.pos);
            self.state_dir_outside(dir, state_pos, &rules);
        }
        let rules = rules.into_iter().map(|(r, _)| r).collect();
        let Some(state_dir) = state_dir else {
            self.error(
                root.pos,
                "no state directory: set `state_dir:`, or $STATE_DIRECTORY, $XDG_STATE_HOME or $HOME",
            );
            return None;
        };
        Some(Config {
            source: self.file.clone(),
            state_dir,
            shutdown_timeout,
            metrics_listen,
            targets,
            rules,
            includes: vec![],
            parts: vec![],
            groups: BTreeMap::new(),
        })
    }

    /// The valid targets, and the name of every target declared (valid or not).
    fn targets(&mut self, node: &Node, defaults: &Tuning) -> (Vec<Target>, Vec<String>) {
        let Some(entries) = self.mapping(node, "targets") else {
            return (vec![], vec![]);
        };
        let mut out: Vec<Target> = Vec::new();
        let mut declared: Vec<String> = Vec::new();
        for (k, v) in entries {
            let Some(name) = k.as_scalar().filter(|s| !s.is_empty()) else {
                self.error(k.pos, "targets: each target needs a name as its key");
                continue;
            };
            if declared.iter().any(|d| d == name) {
                self.error(
                    k.pos,
                    format!("target \"{name}\" is defined twice (rename or remove one)"),
                );
                continue;
            }
            declared.push(name.to_string());
            if let Some(t) = self.target(name, k.pos, v, defaults) {
                out.extend(self.fleet(t));
            }
        }
        if declared.is_empty() && self.errors.is_empty() {
            self.error(node.pos, "targets: no target defined");
        }
        (out, declared)
    }

    fn target(&mut self, name: &str, pos: Pos, node: &Node, defaults: &Tuning) -> Option<Target> {
        self.target = Some(name.to_string());
        let target = self.target_kind(name, pos, node, defaults);
        self.target = None;
        target
    }

    fn target_kind(&mut self, name: &str, pos: Pos, node: &Node, defaults: &Tuning) -> Option<Target> {
        let what = format!("target \"{name}\"");
        let entries = self.mapping(node, &what)?;
        let ty_node = entries
            .iter()
            .find(|(k, _)| k.as_scalar() == Some("type"))
            .map(|(_, v)| v);
        let Some(ty_node) = ty_node else {
            self.error(
                pos,
                format!(
                    "{what}: missing `type:` (one of {})",
                    crate::providers::TYPES
                        .iter()
                        .map(|t| t.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            return None;
        };
        let ty = ty_node.as_scalar().unwrap_or_default().to_string();
        let types = crate::providers::TYPES;
        let Some(def) = types.iter().find(|t| t.name == ty) else {
            let names: Vec<&str> = types.iter().map(|t| t.name).collect();
            let hint = did_you_mean(&ty, names.iter().copied());
            self.error(
                ty_node.pos,
                format!("{what}: unknown type `{ty}`{hint} (one of {})", names.join(", ")),
            );
            return None;
        };
        let kind_keys: Vec<&str> = std::iter::once("type").chain(def.keys.iter().copied()).collect();
        let allowed: Vec<&str> = kind_keys.iter().chain(TUNING_KEYS).copied().collect();
        let mut tuning = defaults.clone();
        let mut fields: Vec<(&str, &Node)> = Vec::new();
        for (key, _, v) in self.keys(entries, &allowed, &what) {
            if TUNING_KEYS.contains(&key) {
                self.tuning(key, v, &mut tuning, &what);
            } else {
                fields.push((key, v));
            }
        }
        let n_errors = self.errors.len();
        let kind = (def.read)(&mut keys::Keys {
            cx: self,
            fields,
            pos,
            what: what.clone(),
            tuning: &tuning,
        });
        if self.errors.len() != n_errors {
            return None;
        }
        Some(Target {
            name: name.to_string(),
            debounce: tuning.debounce,
            max_delay: tuning.max_delay,
            retry: tuning.retry,
            rate_limit: tuning.rate_limit,
            on_failure: tuning.on_failure,
            kind,
        })
    }

    /// A cache target's `endpoints:`: a non-empty list of http(s) URLs (no user name or
    /// password, no path).
    fn endpoints(&mut self, node: Option<&Node>, pos: Pos, what: &str) -> Vec<String> {
        let Some(node) = node else {
            self.error(
                pos,
                format!("{what}: missing `endpoints:` (a list like [http://127.0.0.1:6081])"),
            );
            return vec![];
        };
        let items: Vec<&Node> = match &node.value {
            Value::Seq(items) => items.iter().collect(),
            _ if node.is_null() => vec![],
            _ => vec![node],
        };
        if items.is_empty() {
            self.error(
                node.pos,
                format!("{what}: endpoints: the list is empty: name at least one cache, like [http://127.0.0.1:6081]"),
            );
        }
        let mut out = Vec::new();
        for item in items {
            if let Some(url) = self.api_url(item, &format!("{what}: endpoints")) {
                let url = url.trim_end_matches('/').to_string();
                let rest = url.split_once("://").map_or("", |(_, r)| r);
                if rest.contains('/') {
                    self.error(
                        item.pos,
                        format!("{what}: endpoints: `{url}` must be scheme://host:port only"),
                    );
                } else if out.contains(&url) {
                    self.error(item.pos, format!("{what}: endpoints: `{url}` is listed twice"));
                } else {
                    out.push(url);
                }
            }
        }
        out
    }

    /// An HTTP header name.
    fn header_name(&mut self, node: &Node, what: &str) -> Option<String> {
        let name = self.string(node, what, false)?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            self.error(
                node.pos,
                format!("{what}: `{name}` is not a header name (letters, digits, `-`)"),
            );
            return None;
        }
        Some(name)
    }

    /// A target with several endpoints as one target per endpoint, `NAME@ENDPOINT`, each
    /// delivered, retried and reported on its own; the group is remembered under `NAME`.
    fn fleet(&mut self, target: Target) -> Vec<Target> {
        let endpoints = std::mem::take(&mut self.fleet_endpoints);
        if endpoints.len() <= 1 {
            return vec![target];
        }
        let members: Vec<Target> = endpoints
            .iter()
            .map(|e| {
                let mut t = target.clone();
                t.name = format!("{}@{e}", target.name);
                if let Some(endpoint) = t.kind.endpoint_mut() {
                    *endpoint = e.clone();
                }
                t
            })
            .collect();
        self.groups
            .insert(target.name.clone(), members.iter().map(|t| t.name.clone()).collect());
        members
    }

    /// `max_urls:` of a URL-list target: a whole number of at least 1 (default 1,000).
    fn max_urls(&mut self, node: Option<&Node>, what: &str) -> usize {
        let Some(v) = node else { return 1000 };
        match self.number::<usize>(v, &format!("{what}: max_urls"), "a number of URLs per request") {
            Some(0) => {
                self.error(v.pos, format!("{what}: max_urls must be at least 1"));
                1000
            }
            Some(n) => n,
            None => 1000,
        }
    }

    /// A secret given inline (`api_key:`) or in a file (`api_key_file:`).
    fn secret(
        &mut self,
        what: &str,
        pos: Pos,
        inline: Option<&Node>,
        file: Option<&Node>,
        key: &str,
    ) -> Option<Secret> {
        match (inline, file) {
            (Some(a), Some(_)) => {
                self.error(a.pos, format!("{what}: set either `{key}` or `{key}_file`, not both"));
                None
            }
            (Some(v), None) => {
                let s = self.string(v, &format!("{what}: {key}"), true)?;
                if s.trim().is_empty() && !self.opts.dry_run {
                    self.secret_problem(v.pos, format!("{what}: {key} is empty"));
                    return Some(Secret::default());
                }
                Some(Secret::new(s.trim()))
            }
            (None, Some(v)) => {
                let path = self.path(v, &format!("{what}: {key}_file"), true)?;
                match std::fs::read_to_string(&path) {
                    Ok(s) if !s.trim().is_empty() => Some(Secret::new(s.trim())),
                    Ok(_) => {
                        self.secret_problem(v.pos, format!("{what}: {key}_file {} is empty", path.display()));
                        Some(Secret::default())
                    }
                    Err(e) => {
                        self.secret_problem(
                            v.pos,
                            format!("{what}: cannot read {key}_file {}: {e} (check the path and that purgewatch may read it)", path.display()),
                        );
                        Some(Secret::default())
                    }
                }
            }
            (None, None) => {
                self.secret_problem(pos, format!("{what}: missing `{key}:` or `{key}_file:`"));
                Some(Secret::default())
            }
        }
    }

    /// The valid rules, each with where its `watch:` value is.
    fn rules(&mut self, node: &Node, targets: &[&str]) -> Vec<(Rule, Pos)> {
        let items: &[Node] = match &node.value {
            Value::Seq(items) => items,
            _ if node.is_null() => &[],
            _ => {
                self.error(node.pos, "rules must be a list (each item starts with `- name:`)");
                return vec![];
            }
        };
        let mut out = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        for (i, item) in items.iter().enumerate() {
            let rule = self.rule(i, item, targets);
            if let Some((r, _)) = &rule {
                self.rule_positions.push((r.name.clone(), self.file.clone(), item.pos));
            }
            // A second rule of the same name is an error whether or not either rule is valid.
            if let Some((name, pos)) = rule_name(item)
                && !seen.insert(name)
            {
                self.error(
                    pos,
                    format!("rule \"{name}\" is defined twice (rule names must be unique)"),
                );
                continue;
            }
            out.extend(rule);
        }
        if items.is_empty() {
            self.error(node.pos, "rules: no rule defined");
        }
        out
    }

    fn rule(&mut self, index: usize, node: &Node, targets: &[&str]) -> Option<(Rule, Pos)> {
        let entries = self.mapping(node, &format!("rule #{}", index + 1))?;
        let name = entries
            .iter()
            .find(|(k, _)| k.as_scalar() == Some("name"))
            .and_then(|(_, v)| v.as_scalar().map(str::to_string));
        let what = match &name {
            Some(n) => format!("rule \"{n}\""),
            None => {
                self.error(node.pos, format!("rule #{}: missing `name:`", index + 1));
                format!("rule #{}", index + 1)
            }
        };
        let n_errors = self.errors.len();
        let mut rule = Rule::new(name.unwrap_or_default(), PathBuf::new());
        let mut warm_pos = None;
        let mut verify_pos = None;
        let mut watch_pos = None;
        let mut has_targets = false;
        for (key, _, v) in self.keys(entries, RULE_KEYS, &what) {
            let kw = format!("{what}: {key}");
            match key {
                "name" => {}
                "watch" => {
                    watch_pos = Some(v.pos);
                    if let Some(p) = self.path(v, &kw, false) {
                        match std::fs::metadata(&p) {
                            Ok(m) if m.is_dir() => {
                                if let Some(fs) = system_tree(&real_path(&p)) {
                                    self.error(
                                        v.pos,
                                        format!(
                                            "{kw}: {} is {fs}, not a site: watch the directory your site is built into",
                                            p.display()
                                        ),
                                    );
                                }
                            }
                            Ok(_) => self.error(v.pos, format!("{kw}: {} is not a directory", p.display())),
                            Err(e) => {
                                let message = format!(
                                    "{kw}: directory {} does not exist ({e}); create it or fix the path (relative paths are relative to the rules file)",
                                    p.display()
                                );
                                if self.opts.trees_optional {
                                    self.warn(v.pos, message);
                                } else {
                                    self.error(v.pos, message);
                                }
                            }
                        }
                        rule.watch = p;
                    }
                }
                "targets" => {
                    has_targets = true;
                    let list = match &v.value {
                        Value::Seq(_) => self.strings(v, &kw),
                        _ => self.string(v, &kw, false).map(|s| vec![(s, v.pos)]).unwrap_or_default(),
                    };
                    for (t, pos) in list {
                        if targets.contains(&t.as_str()) {
                            if !rule.targets.contains(&t) {
                                rule.targets.push(t);
                            }
                        } else {
                            let hint = did_you_mean(&t, targets.iter().copied());
                            self.error(pos, format!("{what}: unknown target \"{t}\"{hint}"));
                        }
                    }
                }
                "include" | "exclude" => {
                    for (g, pos) in self.strings(v, &kw) {
                        match GlobBuilder::new(&g).literal_separator(true).build() {
                            Ok(glob) if key == "include" => rule.include.push(glob),
                            Ok(glob) => rule.exclude.push(glob),
                            Err(e) => self.error(pos, format!("{kw}: bad glob `{g}`: {}", glob_reason(&e))),
                        }
                    }
                }
                "match" => {
                    for (r, pos) in self.strings(v, &kw) {
                        match Regex::new(&r) {
                            Ok(re) => rule.matches.push(re),
                            Err(e) => {
                                let reason = e.to_string().lines().last().unwrap_or_default().trim().to_string();
                                self.error(pos, format!("{kw}: bad regex `{r}`: {reason}"));
                            }
                        }
                    }
                }
                "url_prefix" => {
                    if let Some(p) = self.string(v, &kw, false) {
                        if p.contains("://") || p.contains('?') || p.contains('#') {
                            self.error(
                                v.pos,
                                format!("{kw}: `{p}` must be a URL path like /blog/, without host or query"),
                            );
                        }
                        let p = p.trim_matches('/');
                        rule.url_prefix = if p.is_empty() { "/".into() } else { format!("/{p}/") };
                    }
                }
                "index_files" => rule.index_files = self.strings(v, &kw).into_iter().map(|(s, _)| s).collect(),
                "base_url" => rule.base_url = self.base_url(v, &kw),
                "verify" => {
                    verify_pos = Some(v.pos);
                    rule.verify = self.verify(v, &kw);
                }
                "warm" => {
                    if let Some(b) = self.choice(v, &kw, BOOLEAN) {
                        rule.warm = b;
                        warm_pos = b.then_some(v.pos);
                    }
                }
                "follow_symlinks" => {
                    if let Some(b) = self.choice(v, &kw, BOOLEAN) {
                        rule.follow_symlinks = b
                    }
                }
                "warm_limit" => match self.number::<usize>(v, &kw, "a number of URLs") {
                    Some(n) if n > 0 => rule.warm_limit = n,
                    Some(_) => self.error(v.pos, format!("{kw}: must be at least 1 (or set `warm: false`)")),
                    None => {}
                },
                "purge" => {
                    if let Some(m) = self.choice(v, &kw, &[("changed", PurgeMode::Changed), ("all", PurgeMode::All)]) {
                        rule.purge = m
                    }
                }
                _ => {}
            }
        }
        if watch_pos.is_none() {
            self.error(node.pos, format!("{what}: missing `watch:` (the directory to watch)"));
        }
        // `verify.base_url` defaults to the rule's `base_url`.
        if let Some(v) = rule.verify.as_mut().filter(|v| v.base_url.is_empty()) {
            match &rule.base_url {
                Some(base) => v.base_url = base.clone(),
                None => self.error(
                    verify_pos.unwrap_or(node.pos),
                    format!(
                        "{what}: verify: missing `base_url:` (where the watched directory is served, like https://www.example.com; here or as the rule's `base_url:`)"
                    ),
                ),
            }
        }
        if let (Some(pos), None) = (warm_pos, &rule.verify) {
            self.error(
                pos,
                format!("{what}: warm: true needs `verify: {{base_url: https://...}}` to know where the site is served (`sample: 0` warms without checking)"),
            );
        }
        if !has_targets {
            self.error(node.pos, format!("{what}: missing `targets:` (a list of target names)"));
        }
        if self.errors.len() != n_errors {
            None
        } else {
            Some((rule, watch_pos.unwrap_or(node.pos)))
        }
    }
}

/// `path` with every symlink resolved, as far as it exists; the rest is appended as written (a
/// state directory may not exist yet).
fn real_path(path: &Path) -> PathBuf {
    let mut missing = Vec::new();
    let mut cur = path;
    loop {
        if let Ok(real) = std::fs::canonicalize(cur) {
            return missing.iter().rev().fold(real, |acc: PathBuf, part| acc.join(part));
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_os_string());
                cur = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// Whether `program` can be run as a hook: an absolute path (no shell, no `$PATH` search: the
/// daemon's environment under systemd is not a login shell's) to an executable file.
pub(crate) fn runnable(program: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let path = Path::new(program);
    if !path.is_absolute() {
        return Err("not an absolute path: name the program by its full path, like /usr/local/bin/notify-ops (no shell runs it)".into());
    }
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => Err("not a file".into()),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => Err("not executable (chmod +x it)".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("cannot be run: {e}")),
    }
}

/// What a directory that is no site is, when it is one: the root, or on a kernel
/// pseudo-filesystem (walking `/proc` never ends: it holds every process's view of the whole
/// tree). Judged by the filesystem's type, not by its path: a tmpfs (`/dev/shm`, `/run`) is a
/// real filesystem, and a site there is watched like any other.
fn system_tree(real: &Path) -> Option<String> {
    if real == Path::new("/") {
        return Some("the root of the filesystem".into());
    }
    filesystem_type(real)
        .filter(|fs| PSEUDO_FILESYSTEMS.contains(&fs.as_str()))
        .map(|fs| format!("on a kernel pseudo-filesystem ({fs})"))
}

/// Filesystems that hold no files of a site.
const PSEUDO_FILESYSTEMS: &[&str] = &[
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "cgroup",
    "cgroup2",
    "debugfs",
    "tracefs",
    "securityfs",
    "pstore",
    "bpf",
    "configfs",
    "fusectl",
    "mqueue",
    "efivarfs",
    "binfmt_misc",
    "selinuxfs",
    "autofs",
    "rpc_pipefs",
    "nsfs",
    "hugetlbfs",
];

/// The type of the filesystem `real` (a path with no symlinks) is on: the mount with the
/// longest mount point above it in `/proc/self/mountinfo` (the last one, for a mount over
/// another), or, where that cannot be read, from `statfs`'s magic number.
fn filesystem_type(real: &Path) -> Option<String> {
    if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
        let mut best: Option<(usize, String)> = None;
        for line in info.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let (Some(point), Some(dash)) = (fields.get(4), fields.iter().position(|f| *f == "-")) else {
                continue;
            };
            let Some(fstype) = fields.get(dash + 1) else { continue };
            let point = PathBuf::from(unescape_mount_point(point));
            let depth = point.components().count();
            if real.starts_with(&point) && best.as_ref().is_none_or(|(d, _)| depth >= *d) {
                best = Some((depth, fstype.to_string()));
            }
        }
        if let Some((_, fstype)) = best {
            return Some(fstype);
        }
    }
    statfs_type(real)
}

/// mountinfo writes space, tab, newline and backslash in a mount point as `\ooo`.
fn unescape_mount_point(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(octal) = s.get(i + 1..i + 4)
            && let Ok(v) = u8::from_str_radix(octal, 8)
        {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(target_os = "linux")]
fn statfs_type(real: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(real.as_os_str().as_bytes()).ok()?;
    // SAFETY: an all-zero statfs is a valid value of the plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a statfs the call writes.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let name = match st.f_type as i64 {
        0x9fa0 => "proc",
        0x6265_6572 => "sysfs",
        0x1cd1 => "devpts",
        0x0027_e0eb => "cgroup",
        0x6367_7270 => "cgroup2",
        0x6462_6720 => "debugfs",
        0x7472_6163 => "tracefs",
        0x7363_6673 => "securityfs",
        0x6165_676c => "pstore",
        0xcafe_4a11 => "bpf",
        _ => "other",
    };
    Some(name.to_string())
}

#[cfg(not(target_os = "linux"))]
fn statfs_type(_real: &Path) -> Option<String> {
    None
}

/// A rule item's `name:` and where its value is.
fn rule_name(item: &Node) -> Option<(&str, Pos)> {
    match &item.value {
        Value::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.as_scalar() == Some("name"))
            .and_then(|(_, v)| Some((v.as_scalar()?, v.pos))),
        _ => None,
    }
}

fn trim_url(url: String) -> String {
    url.trim().trim_end_matches('/').to_string()
}

fn glob_reason(e: &globset::Error) -> String {
    e.kind().to_string()
}

/// Replaces `${VAR}` with the variable's value. `$$` is a literal `$`. Returns the first unset name.
fn interpolate(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(after_dollar) = after.strip_prefix('$') {
            out.push('$');
            rest = after_dollar;
        } else if let Some(body) = after.strip_prefix('{')
            && let Some(end) = body.find('}')
        {
            let name = &body[..end];
            match env(name) {
                Some(v) => out.push_str(&v),
                None => return Err(name.to_string()),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// `$STATE_DIRECTORY` (the first of its colon-separated list), else `$XDG_STATE_HOME/purgewatch`,
/// else `~/.local/state/purgewatch`.
fn default_state_dir(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(dir) = env("STATE_DIRECTORY")
        .and_then(|s| s.split(':').next().map(str::to_string))
        .filter(|s| !s.is_empty())
    {
        return Some(PathBuf::from(dir));
    }
    if let Some(x) = env("XDG_STATE_HOME").filter(|s| !s.is_empty()) {
        return Some(Path::new(&x).join("purgewatch"));
    }
    env("HOME")
        .filter(|s| !s.is_empty())
        .map(|h| Path::new(&h).join(".local/state/purgewatch"))
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

pub(crate) mod keys;

#[cfg(test)]
mod tests;

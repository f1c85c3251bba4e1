//! The file-level keys of the main rules file (`state_dir`, `metrics_listen`, …) and the
//! `defaults` (and a target's own tuning keys) every target inherits.

use super::*;
use crate::providers::command::runnable;

impl Cx<'_> {
    /// An error for each rule whose watched tree holds the state directory.
    pub(super) fn state_dir_outside(&mut self, dir: &Path, state_pos: Option<Pos>, rules: &[(Rule, Pos)]) {
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

    pub(super) fn tuning(&mut self, key: &str, v: &Node, t: &mut Tuning, what: &str) {
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

    pub(super) fn config(&mut self, root: &Node) -> Option<Config> {
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
        let (targets, rules) = self.sections(root.pos, targets_node, rules_node, includes, &defaults);
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

    /// The `targets:` and `rules:` sections (a file with `include:` may leave either to the
    /// files it includes).
    fn sections(
        &mut self,
        pos: Pos,
        targets_node: Option<&Node>,
        rules_node: Option<&Node>,
        includes: bool,
        defaults: &Tuning,
    ) -> (Vec<Target>, Vec<(Rule, Pos)>) {
        let (targets, declared) = match targets_node {
            Some(node) => self.targets(node, defaults),
            None if includes => (vec![], vec![]),
            None => {
                self.error(pos, "no `targets:` section: name at least one sitehost or vims target");
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
                self.error(pos, "no `rules:` section: add a rule that watches a directory");
                vec![]
            }
        };
        (targets, rules)
    }
}

/// `$STATE_DIRECTORY` (the first of its colon-separated list), else `$XDG_STATE_HOME/purgewatch`,
/// else `~/.local/state/purgewatch`.
pub(super) fn default_state_dir(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
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

//! The `targets:` section: each target's name, its type (whose keys its provider's file
//! reads, see [`super::keys`]), fleets of caches, and targets no rule uses.

use super::*;

impl Cx<'_> {
    /// A warning for each target of `targets_node` that no rule of any file names.
    pub(super) fn unused_targets(&mut self, targets_node: Option<&Node>, rules: &[(Rule, Pos)]) {
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

    /// The valid targets, and the name of every target declared (valid or not).
    pub(super) fn targets(&mut self, node: &Node, defaults: &Tuning) -> (Vec<Target>, Vec<String>) {
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

    pub(super) fn target(&mut self, name: &str, pos: Pos, node: &Node, defaults: &Tuning) -> Option<Target> {
        self.target = Some(name.to_string());
        let target = self.target_kind(name, pos, node, defaults);
        self.target = None;
        target
    }

    pub(super) fn target_kind(&mut self, name: &str, pos: Pos, node: &Node, defaults: &Tuning) -> Option<Target> {
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
        let kind = (def.read)(&mut keys::KeyReader {
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
    pub(super) fn endpoints(&mut self, node: Option<&Node>, pos: Pos, what: &str) -> Vec<String> {
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
    pub(super) fn header_name(&mut self, node: &Node, what: &str) -> Option<String> {
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
    pub(super) fn fleet(&mut self, target: Target) -> Vec<Target> {
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
    pub(super) fn max_urls(&mut self, node: Option<&Node>, what: &str) -> usize {
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
}

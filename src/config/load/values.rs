//! Reading one value of the rules: a mapping's keys, strings, durations, numbers, paths, URLs
//! and secrets, each problem reported with its `file:line:col` and what to write instead.

use super::*;

impl Cx<'_> {
    /// A secret problem: an error, or a warning under `--dry-run`.
    pub(super) fn secret_problem(&mut self, pos: Pos, message: String) {
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

    pub(super) fn mapping<'n>(&mut self, node: &'n Node, what: &str) -> Option<Entries<'n>> {
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
    pub(super) fn keys<'n>(
        &mut self,
        entries: Entries<'n>,
        allowed: &[&str],
        what: &str,
    ) -> Vec<(&'n str, &'n Node, &'n Node)> {
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
    pub(super) fn string(&mut self, node: &Node, what: &str, secret: bool) -> Option<String> {
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

    pub(super) fn strings(&mut self, node: &Node, what: &str) -> Vec<(String, Pos)> {
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

    pub(super) fn duration(&mut self, node: &Node, what: &str) -> Option<Duration> {
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

    pub(super) fn number<T: std::str::FromStr>(&mut self, node: &Node, what: &str, expect: &str) -> Option<T> {
        self.number_text(node, what, expect, &|s| s.parse::<T>().is_ok())?
            .parse()
            .ok()
    }

    /// A number's text (trimmed), when `parses` takes it; else an error saying it is not
    /// `expect` (`a number of paths`).
    pub(super) fn number_text(
        &mut self,
        node: &Node,
        what: &str,
        expect: &str,
        parses: &dyn Fn(&str) -> bool,
    ) -> Option<String> {
        let s = self.string(node, what, false)?;
        if parses(s.trim()) {
            Some(s.trim().to_string())
        } else {
            self.error(node.pos, format!("{what}: `{s}` is not {expect}"));
            None
        }
    }

    pub(super) fn share(&mut self, node: &Node, what: &str) -> Option<f64> {
        let v: f64 = self.number(node, what, "a number between 0 and 1")?;
        if (0.0..=1.0).contains(&v) {
            Some(v)
        } else {
            self.error(node.pos, format!("{what}: {v} is not between 0 and 1 (0.8 means 80%)"));
            None
        }
    }

    pub(super) fn path(&mut self, node: &Node, what: &str, secret: bool) -> Option<PathBuf> {
        let s = self.string(node, what, secret)?;
        Some(self.resolve(&s))
    }

    pub(super) fn resolve(&self, s: &str) -> PathBuf {
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
    pub(super) fn api_url(&mut self, node: &Node, what: &str) -> Option<String> {
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
    pub(super) fn choice<T: Copy>(&mut self, node: &Node, what: &str, options: &[(&str, T)]) -> Option<T> {
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
    pub(super) fn base_url(&mut self, node: &Node, what: &str) -> Option<String> {
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

    /// `metrics_listen`: an address and port. Anything but loopback is served, with a warning
    /// (the metrics name targets and rules; the health check is unauthenticated).
    pub(super) fn listen_address(&mut self, node: &Node) -> Option<std::net::SocketAddr> {
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
    pub(super) fn id(&mut self, node: Option<&Node>, what: &str, key: &str, value: String) -> Option<String> {
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

    /// A secret given inline (`api_key:`) or in a file (`api_key_file:`).
    pub(super) fn secret(
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
}

pub(super) fn trim_url(url: String) -> String {
    url.trim().trim_end_matches('/').to_string()
}

pub(super) fn glob_reason(e: &globset::Error) -> String {
    e.kind().to_string()
}

/// Replaces `${VAR}` with the variable's value. `$$` is a literal `$`. Returns the first unset name.
pub(super) fn interpolate(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
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

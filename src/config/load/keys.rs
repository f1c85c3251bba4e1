//! What a target type's own file reads its keys with. Each provider (`src/providers/*.rs`)
//! declares the keys its type takes and builds its settings from a [`Keys`]; the loader has
//! already refused keys the type does not take, read the tuning keys every target shares, and
//! here reports every problem of a key with its `file:line:col` (and the target's position for a
//! missing key).

use super::*;

/// One target's keys, as its type's file reads them.
pub(crate) struct Keys<'k, 'a> {
    pub(super) cx: &'k mut Cx<'a>,
    pub(super) fields: Vec<(&'k str, &'k Node)>,
    /// Where the target is defined (for a missing key).
    pub(super) pos: Pos,
    /// `target "NAME"`, how messages name it.
    pub(super) what: String,
    pub(super) tuning: &'k Tuning,
}

impl<'k> Keys<'k, '_> {
    fn field(&self, key: &str) -> Option<&'k Node> {
        self.fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    fn named(&self, key: &str) -> String {
        format!("{}: {key}", self.what)
    }

    /// Whether the rules set `key`.
    pub(crate) fn has(&self, key: &str) -> bool {
        self.field(key).is_some()
    }

    /// An error about `key` (at its value, or at the target when it is not set).
    pub(crate) fn error(&mut self, key: &str, problem: impl std::fmt::Display) {
        let pos = self.field(key).map_or(self.pos, |v| v.pos);
        let msg = format!("{}: {problem}", self.named(key));
        self.cx.error(pos, msg);
    }

    /// An optional text value.
    pub(crate) fn string(&mut self, key: &str) -> Option<String> {
        let v = self.field(key)?;
        let what = self.named(key);
        self.cx.string(v, &what, false)
    }

    /// A text value that must be set; `example` says what it is (`the stack name`).
    pub(crate) fn required(&mut self, key: &str, example: &str) -> Option<String> {
        if !self.has(key) {
            let msg = format!("{}: missing `{key}:` ({example})", self.what);
            self.cx.error(self.pos, msg);
            return None;
        }
        self.string(key)
    }

    /// A provider's id that is a whole number (`client_id`, `cdn_id`), `value` as read.
    pub(crate) fn whole_number(&mut self, key: &str, value: String) -> Option<String> {
        let v = self.field(key);
        let what = self.what.clone();
        self.cx.id(v, &what, key, value)
    }

    /// A provider's id of letters, digits and what `also` allows (`zone_id`, `service_id`).
    pub(crate) fn id(&mut self, key: &str, example: &str, also: &[u8], describe: &str) -> String {
        let id = self.required(key, example).unwrap_or_default();
        if !id.is_empty() && !id.bytes().all(|b| b.is_ascii_alphanumeric() || also.contains(&b)) {
            self.error(key, format!("`{id}` is not {describe}"));
        }
        id
    }

    /// `api_url:`, else `default`; a URL checked as every API URL is (http(s), no password).
    pub(crate) fn api_url(&mut self, default: &str) -> String {
        let what = self.named("api_url");
        let url = match self.field("api_url") {
            Some(v) => self.cx.api_url(v, &what),
            None => None,
        };
        trim_url(url.unwrap_or_else(|| default.into()))
    }

    /// A URL that must be set (a webhook's `url:`), checked as API URLs are.
    pub(crate) fn url(&mut self, key: &str, example: &str) -> String {
        match self.field(key) {
            Some(v) => {
                let what = self.named(key);
                self.cx.api_url(v, &what).unwrap_or_default()
            }
            None => {
                let msg = format!("{}: missing `{key}:` ({example})", self.what);
                self.cx.error(self.pos, msg);
                String::new()
            }
        }
    }

    /// A credential given as `KEY:` or `KEY_file:` (one of them must be set).
    pub(crate) fn secret(&mut self, key: &str) -> Secret {
        let (inline, file) = (self.field(key), self.field(&format!("{key}_file")));
        let what = self.what.clone();
        let pos = self.pos;
        self.cx.secret(&what, pos, inline, file, key).unwrap_or_default()
    }

    /// A credential that may be left out: `None` unless `KEY:` or `KEY_file:` is set.
    pub(crate) fn optional_secret(&mut self, key: &str) -> Option<Secret> {
        (self.has(key) || self.has(&format!("{key}_file"))).then(|| self.secret(key))
    }

    /// A credential from `KEY:`/`KEY_file:`, else from the environment variable `var` (the
    /// standard AWS variables); `needed`: its absence is a problem.
    pub(crate) fn secret_or_env(&mut self, key: &str, var: &str, needed: bool) -> Option<Secret> {
        if self.has(key) || self.has(&format!("{key}_file")) {
            return Some(self.secret(key));
        }
        match (self.cx.env)(var).filter(|v| !v.trim().is_empty()) {
            Some(v) => Some(Secret::new(v.trim())),
            None if needed => {
                let msg = format!(
                    "{}: missing `{key}:` or `{key}_file:` (or ${var} in the environment)",
                    self.what
                );
                self.cx.secret_problem(self.pos, msg);
                Some(Secret::default())
            }
            None => None,
        }
    }

    /// A number; `expect` says what it is (`a number of paths`).
    pub(crate) fn number<T: std::str::FromStr>(&mut self, key: &str, expect: &str) -> Option<T> {
        let v = self.field(key)?;
        let what = self.named(key);
        self.cx.number(v, &what, expect)
    }

    pub(crate) fn duration(&mut self, key: &str, default: Duration) -> Duration {
        let Some(v) = self.field(key) else { return default };
        let what = self.named(key);
        self.cx.duration(v, &what).unwrap_or(default)
    }

    pub(crate) fn boolean(&mut self, key: &str, default: bool) -> bool {
        self.choice(key, BOOLEAN, default)
    }

    /// One of a few words.
    pub(crate) fn choice<T: Copy>(&mut self, key: &str, options: &[(&str, T)], default: T) -> T {
        let Some(v) = self.field(key) else { return default };
        let what = self.named(key);
        self.cx.choice(v, &what, options).unwrap_or(default)
    }

    /// A list of text values (a command's argv).
    pub(crate) fn strings(&mut self, key: &str) -> Vec<String> {
        let Some(v) = self.field(key) else { return vec![] };
        let what = self.named(key);
        self.cx.strings(v, &what).into_iter().map(|(s, _)| s).collect()
    }

    /// `max_urls:`, at least 1, else `default`.
    pub(crate) fn max_urls(&mut self, default: usize) -> usize {
        match self.field("max_urls") {
            Some(v) => {
                let what = self.what.clone();
                self.cx.max_urls(Some(v), &what)
            }
            None => default,
        }
    }

    /// A cache fleet's `endpoints:` (each one delivered on its own: see `Config::groups`);
    /// the first, which the settings hold until the fleet is split.
    pub(crate) fn endpoints(&mut self) -> String {
        let v = self.field("endpoints");
        let what = self.what.clone();
        let endpoints = self.cx.endpoints(v, self.pos, &what);
        self.cx.fleet_endpoints = endpoints.clone();
        endpoints.into_iter().next().unwrap_or_default()
    }

    /// An HTTP header name, else `default`.
    pub(crate) fn header_name(&mut self, key: &str, default: &str) -> String {
        let Some(v) = self.field(key) else {
            return default.into();
        };
        let what = self.named(key);
        self.cx.header_name(v, &what).unwrap_or_else(|| default.into())
    }

    /// How patterns are built for this target (`max_pattern_bytes` and the thresholds).
    pub(crate) fn patterns(&self) -> PatternSettings {
        self.tuning.patterns.clone()
    }
}

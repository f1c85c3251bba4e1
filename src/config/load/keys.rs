//! The loader's side of [`crate::providers::Keys`]: a target type's file reads its keys through
//! it, and every problem is reported here with its `file:line:col` (the target's position for a
//! missing key). The loader has already refused keys the type does not take and read the tuning
//! keys every target shares.

use super::*;
use crate::providers::Keys;

/// One target's keys, as its type's file reads them.
pub(super) struct KeyReader<'k, 'a> {
    pub(super) cx: &'k mut Cx<'a>,
    pub(super) fields: Vec<(&'k str, &'k Node)>,
    /// Where the target is defined (for a missing key).
    pub(super) pos: Pos,
    /// `target "NAME"`, how messages name it.
    pub(super) what: String,
    pub(super) tuning: &'k Tuning,
}

impl<'k> KeyReader<'k, '_> {
    fn field(&self, key: &str) -> Option<&'k Node> {
        self.fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    fn named(&self, key: &str) -> String {
        format!("{}: {key}", self.what)
    }
}

impl Keys for KeyReader<'_, '_> {
    fn has(&self, key: &str) -> bool {
        self.field(key).is_some()
    }

    fn report(&mut self, key: &str, problem: &str) {
        let pos = self.field(key).map_or(self.pos, |v| v.pos);
        let msg = format!("{}: {problem}", self.named(key));
        self.cx.error(pos, msg);
    }

    fn string(&mut self, key: &str) -> Option<String> {
        let v = self.field(key)?;
        let what = self.named(key);
        self.cx.string(v, &what, false)
    }

    fn required(&mut self, key: &str, example: &str) -> Option<String> {
        if !self.has(key) {
            let msg = format!("{}: missing `{key}:` ({example})", self.what);
            self.cx.error(self.pos, msg);
            return None;
        }
        self.string(key)
    }

    fn whole_number(&mut self, key: &str, value: String) -> Option<String> {
        let v = self.field(key);
        let what = self.what.clone();
        self.cx.id(v, &what, key, value)
    }

    fn api_url(&mut self, default: &str) -> String {
        let what = self.named("api_url");
        let url = match self.field("api_url") {
            Some(v) => self.cx.api_url(v, &what),
            None => None,
        };
        trim_url(url.unwrap_or_else(|| default.into()))
    }

    fn url(&mut self, key: &str, example: &str) -> String {
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

    fn secret(&mut self, key: &str) -> Secret {
        let (inline, file) = (self.field(key), self.field(&format!("{key}_file")));
        let what = self.what.clone();
        let pos = self.pos;
        self.cx.secret(&what, pos, inline, file, key).unwrap_or_default()
    }

    fn secret_or_env(&mut self, key: &str, var: &str, needed: bool) -> Option<Secret> {
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

    fn number_text(&mut self, key: &str, expect: &str, parses: &dyn Fn(&str) -> bool) -> Option<String> {
        let v = self.field(key)?;
        let what = self.named(key);
        self.cx.number_text(v, &what, expect, parses)
    }

    fn duration(&mut self, key: &str, default: Duration) -> Duration {
        let Some(v) = self.field(key) else { return default };
        let what = self.named(key);
        self.cx.duration(v, &what).unwrap_or(default)
    }

    fn choice_index(&mut self, key: &str, words: &[&str]) -> Option<usize> {
        let v = self.field(key)?;
        let what = self.named(key);
        let options: Vec<(&str, usize)> = words.iter().enumerate().map(|(i, w)| (*w, i)).collect();
        self.cx.choice(v, &what, &options)
    }

    fn strings(&mut self, key: &str) -> Vec<String> {
        let Some(v) = self.field(key) else { return vec![] };
        let what = self.named(key);
        self.cx.strings(v, &what).into_iter().map(|(s, _)| s).collect()
    }

    fn max_urls(&mut self, default: usize) -> usize {
        match self.field("max_urls") {
            Some(v) => {
                let what = self.what.clone();
                self.cx.max_urls(Some(v), &what)
            }
            None => default,
        }
    }

    fn endpoints(&mut self) -> String {
        let v = self.field("endpoints");
        let what = self.what.clone();
        let endpoints = self.cx.endpoints(v, self.pos, &what);
        self.cx.fleet_endpoints = endpoints.clone();
        endpoints.into_iter().next().unwrap_or_default()
    }

    fn header_name(&mut self, key: &str, default: &str) -> String {
        let Some(v) = self.field(key) else {
            return default.into();
        };
        let what = self.named(key);
        self.cx.header_name(v, &what).unwrap_or_else(|| default.into())
    }

    fn patterns(&self) -> PatternSettings {
        self.tuning.patterns.clone()
    }
}

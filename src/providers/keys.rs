//! What a target type's own file reads its keys with. Each provider (`src/providers/*.rs`)
//! declares the keys its type takes and builds its settings from a [`Keys`]. The rules loader
//! (`config`) implements it: it has already refused keys the type does not take and read the
//! tuning keys every target shares, and reports every problem of a key with its `file:line:col`
//! (the target's position for a missing key).

use std::time::Duration;

use super::target::PatternSettings;
use crate::secret::Secret;

/// The words of a yes-or-no key.
pub(crate) const BOOLEAN: &[(&str, bool)] = &[("true", true), ("false", false)];

/// One target's keys, as its type's file reads them.
pub(crate) trait Keys {
    /// Whether the rules set `key`.
    fn has(&self, key: &str) -> bool;
    /// An error about `key` (at its value, or at the target when it is not set).
    fn report(&mut self, key: &str, problem: &str);
    /// An optional text value.
    fn string(&mut self, key: &str) -> Option<String>;
    /// A text value that must be set; `example` says what it is (`the stack name`).
    fn required(&mut self, key: &str, example: &str) -> Option<String>;
    /// A provider's id that is a whole number (`client_id`, `cdn_id`), `value` as read.
    fn whole_number(&mut self, key: &str, value: String) -> Option<String>;
    /// `api_url:`, else `default`; a URL checked as every API URL is (http(s), no password).
    fn api_url(&mut self, default: &str) -> String;
    /// A URL that must be set (a webhook's `url:`), checked as API URLs are.
    fn url(&mut self, key: &str, example: &str) -> String;
    /// A credential given as `KEY:` or `KEY_file:` (one of them must be set).
    fn secret(&mut self, key: &str) -> Secret;
    /// A credential from `KEY:`/`KEY_file:`, else from the environment variable `var` (the
    /// standard AWS variables); `needed`: its absence is a problem.
    fn secret_or_env(&mut self, key: &str, var: &str, needed: bool) -> Option<Secret>;
    /// A number's text, when `parses` takes it; else an error saying it is not `expect` (`a
    /// number of paths`).
    fn number_text(&mut self, key: &str, expect: &str, parses: &dyn Fn(&str) -> bool) -> Option<String>;
    fn duration(&mut self, key: &str, default: Duration) -> Duration;
    /// Which of `words` the value is (an error names them all, and the closest).
    fn choice_index(&mut self, key: &str, words: &[&str]) -> Option<usize>;
    /// A list of text values (a command's argv).
    fn strings(&mut self, key: &str) -> Vec<String>;
    /// `max_urls:`, at least 1, else `default`.
    fn max_urls(&mut self, default: usize) -> usize;
    /// A cache fleet's `endpoints:` (each one delivered on its own: see `Config::groups`);
    /// the first, which the settings hold until the fleet is split.
    fn endpoints(&mut self) -> String;
    /// An HTTP header name, else `default`.
    fn header_name(&mut self, key: &str, default: &str) -> String;
    /// How patterns are built for this target (`max_pattern_bytes` and the thresholds).
    fn patterns(&self) -> PatternSettings;
}

impl dyn Keys + '_ {
    /// An error about `key` (at its value, or at the target when it is not set).
    pub(crate) fn error(&mut self, key: &str, problem: impl std::fmt::Display) {
        self.report(key, &problem.to_string());
    }

    /// A provider's id of letters, digits and what `also` allows (`zone_id`, `service_id`).
    pub(crate) fn id(&mut self, key: &str, example: &str, also: &[u8], describe: &str) -> String {
        let id = self.required(key, example).unwrap_or_default();
        if !id.is_empty() && !id.bytes().all(|b| b.is_ascii_alphanumeric() || also.contains(&b)) {
            self.error(key, format!("`{id}` is not {describe}"));
        }
        id
    }

    /// A credential that may be left out: `None` unless `KEY:` or `KEY_file:` is set.
    pub(crate) fn optional_secret(&mut self, key: &str) -> Option<Secret> {
        (self.has(key) || self.has(&format!("{key}_file"))).then(|| self.secret(key))
    }

    /// A number; `expect` says what it is (`a number of paths`).
    pub(crate) fn number<T: std::str::FromStr>(&mut self, key: &str, expect: &str) -> Option<T> {
        self.number_text(key, expect, &|s| s.parse::<T>().is_ok())?.parse().ok()
    }

    pub(crate) fn boolean(&mut self, key: &str, default: bool) -> bool {
        self.choice(key, BOOLEAN, default)
    }

    /// One of a few words.
    pub(crate) fn choice<T: Copy>(&mut self, key: &str, options: &[(&str, T)], default: T) -> T {
        let words: Vec<&str> = options.iter().map(|(w, _)| *w).collect();
        self.choice_index(key, &words).map_or(default, |i| options[i].1)
    }
}

//! Secrets (API keys, tokens) in a type that never prints its contents.

use std::fmt;

/// A credential. `Debug` and `Display` print `[redacted]`; the value is reachable only through
/// [`Secret::expose`], which the providers call when they build a request.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Replaces every occurrence of the secret in `text` (a provider's reply, an error) with
    /// `[redacted]`, so that nothing echoed back can leak it into a log line: as it is, and in
    /// the forms a reply may quote it in (percent-encoded with either case of hex, form-encoded,
    /// JSON-escaped). Every other configured secret ([`remember`]) is scrubbed too: a reply may
    /// quote another target's key.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        if self.0.len() >= 4 {
            for form in self.forms() {
                if out.contains(&form) {
                    out = out.replace(&form, "[redacted]");
                }
            }
        }
        scrub(&out).into_owned()
    }

    /// The secret as it is and as URLs, forms and JSON strings write it, longest first.
    fn forms(&self) -> Vec<String> {
        use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
        let raw = self.0.as_str();
        let percent = utf8_percent_encode(raw, NON_ALPHANUMERIC).to_string();
        // application/x-www-form-urlencoded: `*-._` stay, a space is `+`.
        let form: String = raw
            .bytes()
            .map(|b| match b {
                b' ' => "+".to_string(),
                b'*' | b'-' | b'.' | b'_' => (b as char).to_string(),
                b if b.is_ascii_alphanumeric() => (b as char).to_string(),
                b => format!("%{b:02X}"),
            })
            .collect();
        let json = serde_json::to_string(raw).unwrap_or_default();
        let json = json.trim_matches('"').to_string();
        let lower = |s: &str| crate::escape::lower_hex(s);
        let mut forms = vec![raw.to_string(), lower(&percent), lower(&form), json, percent, form];
        forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        forms.dedup();
        forms
    }
}

/// The forms of every secret configured in this process, longest first: one mask for every
/// output (log lines, command output, hooks' environment, the state file's messages).
static MASK: std::sync::RwLock<Vec<String>> = std::sync::RwLock::new(Vec::new());

/// Adds `secrets` to the mask. Secrets are never taken out: one that was configured before a
/// reload may still be quoted by a reply to a request sent with it.
pub(crate) fn remember<'a>(secrets: impl IntoIterator<Item = &'a Secret>) {
    let mut mask = MASK.write().unwrap_or_else(|e| e.into_inner());
    let before = mask.len();
    for s in secrets {
        if s.0.len() >= 4 {
            mask.extend(s.forms());
        }
    }
    if mask.len() != before {
        mask.sort_by_key(|f| std::cmp::Reverse(f.len()));
        mask.dedup();
    }
}

/// `text` with every configured secret, in each of its forms, replaced by `[redacted]`.
pub(crate) fn scrub(text: &str) -> std::borrow::Cow<'_, str> {
    let mask = MASK.read().unwrap_or_else(|e| e.into_inner());
    let mut out = std::borrow::Cow::Borrowed(text);
    for form in mask.iter() {
        if out.contains(form.as_str()) {
            out = std::borrow::Cow::Owned(out.replace(form.as_str(), "[redacted]"));
        }
    }
    out
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("sk_live_abcdef");
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
        assert_eq!(s.scrub("bad key sk_live_abcdef!"), "bad key [redacted]!");
    }

    /// A text that quotes another configured secret is scrubbed of it too.
    #[test]
    fn every_remembered_secret_is_scrubbed_from_any_text() {
        remember([&Secret::new("other-target-key-123")]);
        let mine = Secret::new("my-token-456");
        assert_eq!(
            mine.scrub("bad token my-token-456, and other-target-key-123"),
            "bad token [redacted], and [redacted]"
        );
        assert_eq!(scrub("url ?k=other-target-key-123"), "url ?k=[redacted]");
    }

    #[test]
    fn encoded_forms_are_scrubbed_too() {
        let s = Secret::new("k3y/with spaces+&=\"quote");
        for text in [
            "k3y/with spaces+&=\"quote",
            "k3y%2Fwith%20spaces%2B%26%3D%22quote",
            "k3y%2fwith%20spaces%2b%26%3d%22quote",
            "k3y%2Fwith+spaces%2B%26%3D%22quote",
            "{\"msg\": \"apikey k3y/with spaces+&=\\\"quote invalid\"}",
        ] {
            let out = s.scrub(text);
            assert!(out.contains("[redacted]") && !out.contains("k3y"), "{text} -> {out}");
        }
    }
}

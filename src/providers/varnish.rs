//! Varnish: mode `ban` sends `BAN /` with a path-anchored regex (the same patterns VIMS gets)
//! in `ban_header`, `.*` for everything; mode `purge` one `PURGE <path>` per URL. 2xx is success.
//! The shipped `examples/varnish/purgewatch.vcl` accepts both from an ACL; the tests run it in a
//! real `varnishd`.

use reqwest::Method;

use super::cache::{CACHE_URLS_PER_REQUEST, each, host_header, judge};
use super::{Accepted, Kind, Provider, ProviderError, TargetType, send, url_list};
use super::{Keys, NO_SECRET, PatternSettings, Shape, TargetKind};
use crate::request::Request;
use crate::secret::Secret;

/// How a Varnish target purges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarnishMode {
    /// `BAN /` with a path-anchored regex in `ban_header`.
    Ban,
    /// `PURGE <path>`, one per URL.
    Purge,
}

/// One Varnish cache (a fleet is one target per endpoint: see `Config::groups`).
#[derive(Debug, Clone)]
pub struct Varnish {
    pub endpoint: String,
    pub mode: VarnishMode,
    pub ban_header: String,
    /// The Host header of each request.
    pub host: Option<String>,
    pub patterns: PatternSettings,
}

pub(crate) const TYPE: TargetType = TargetType {
    name: "varnish",
    keys: &["endpoints", "mode", "ban_header", "host"],
    read,
};

fn read(k: &mut dyn Keys) -> TargetKind {
    let endpoint = k.endpoints();
    let host = k.string("host");
    let mode = k.choice(
        "mode",
        &[("ban", VarnishMode::Ban), ("purge", VarnishMode::Purge)],
        VarnishMode::Ban,
    );
    let ban_header = k.header_name("ban_header", "X-Ban-Regex");
    TargetKind::Varnish(Varnish {
        endpoint,
        mode,
        ban_header,
        host,
        patterns: k.patterns(),
    })
}

/// `BAN /` with the pattern (`*`, everything, as `.*`) in the target's header.
pub(crate) async fn ban(http: &reqwest::Client, v: &Varnish, pattern: &str) -> Result<Accepted, ProviderError> {
    let regex = if pattern == "*" { ".*" } else { pattern };
    let what = format!("BAN {}/ ({}: {regex})", v.endpoint, v.ban_header);
    let method = Method::from_bytes(b"BAN").expect("a valid method name");
    let rb =
        host_header(http.request(method, format!("{}/", v.endpoint)), &v.host).header(v.ban_header.as_str(), regex);
    let reply = send(rb, &what, &Secret::default()).await?;
    judge(&what, &reply, false)?;
    Ok(Accepted {
        job_id: None,
        message: format!("banned on {}", v.endpoint),
    })
}

pub(crate) async fn purge_urls(
    http: &reqwest::Client,
    v: &Varnish,
    paths: &[String],
) -> Result<Accepted, ProviderError> {
    each(http, &v.endpoint, b"PURGE", "", &v.host, paths, false).await
}

impl Kind for Varnish {
    fn type_name(&self) -> &'static str {
        TYPE.name
    }

    fn api(&self) -> (&str, &Secret) {
        (&self.endpoint, &NO_SECRET)
    }

    fn shape(&self) -> Shape {
        match self.mode {
            VarnishMode::Ban => Shape::Patterns {
                max_bytes: self.patterns.max_bytes,
            },
            VarnishMode::Purge => Shape::Urls {
                max: CACHE_URLS_PER_REQUEST,
                absolute: false,
                everything: true,
                prefixes: false,
            },
        }
    }

    fn endpoint_mut(&mut self) -> Option<&mut String> {
        Some(&mut self.endpoint)
    }

    fn describe(&self, req: &Request) -> String {
        match req {
            Request::Pattern(p) => format!(
                "BAN {} {}: {}",
                self.endpoint,
                self.ban_header,
                if p == "*" { ".*" } else { p }
            ),
            Request::Urls { urls, everything, .. } => {
                format!("PURGE {}: {}", self.endpoint, url_list(urls, *everything))
            }
            Request::Stack => format!("BAN {} {}: .*", self.endpoint, self.ban_header),
        }
    }

    async fn purge(&self, p: &Provider, req: &Request) -> Result<Accepted, ProviderError> {
        match req {
            Request::Pattern(pattern) => ban(&p.http, self, pattern).await,
            Request::Urls {
                urls,
                everything: false,
                ..
            } => purge_urls(&p.http, self, urls).await,
            // Everything, whatever the mode: one BAN of every URL.
            _ => ban(&p.http, self, "*").await,
        }
    }

    async fn check(&self, p: &Provider) -> Result<String, ProviderError> {
        super::cache::check(&p.http, &self.endpoint).await
    }
}

//! The provider HTTP APIs, and how their replies are classified.
//!
//! Every reply becomes `Ok`, a [`ProviderError::Transient`] (worth retrying: network errors,
//! timeouts, 408, 429, 5xx, an HTML error page, SiteHost `"status": false`, VIMS `"status":
//! "error"` with HTTP 200) or a [`ProviderError::Permanent`] (other 4xx: bad credentials, an
//! unknown id, VIMS 400 "failed creation"). Messages name the request and quote what the provider
//! said, with any secret scrubbed out.

pub(crate) mod bunny;
pub(crate) mod cache;
pub(crate) mod cloudflare;
pub(crate) mod cloudfront;
pub(crate) mod command;
pub(crate) mod fastly;
mod keys;
pub(crate) mod nginx;
pub(crate) mod sitehost;
pub(crate) mod target;
pub(crate) mod varnish;
pub(crate) mod vims;
pub(crate) mod webhook;

use std::sync::Arc;
use std::time::Duration;

use reqwest::{RequestBuilder, StatusCode};
use serde_json::Value;

use crate::request::Request;
use crate::secret::Secret;
pub(crate) use keys::{BOOLEAN, Keys};
pub(crate) use target::NO_SECRET;
use target::{PatternSettings, Shape, Target, TargetKind};

/// Why a transient failure happened: what the retry is counted under in `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// No connection, or it broke.
    Network,
    Timeout,
    /// HTTP 5xx.
    ServerError,
    /// HTTP 429.
    TooMany,
    /// HTTP 408.
    RequestTimeout,
    /// An HTML page where JSON was expected.
    Html,
    /// A 2xx reply without SiteHost's `"status": true` or VIMS's `"status": "ok"`.
    StatusFalse,
    /// A reply larger than [`BODY_LIMIT`].
    TooLarge,
}

impl Reason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::Network => "network",
            Reason::Timeout => "timeout",
            Reason::ServerError => "5xx",
            Reason::TooMany => "429",
            Reason::RequestTimeout => "408",
            Reason::Html => "html",
            Reason::StatusFalse => "status_false",
            Reason::TooLarge => "too_large",
        }
    }
}

/// A request that failed. The message names the request and what the provider said, scrubbed
/// of the secret: it is what logs, `status`, the state file and `on_failure` carry, so it
/// already quotes its cause. A network failure also keeps its `reqwest::Error` (without the
/// URL, which may carry the key) as the source, for code that asks what kind of failure it was.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ProviderError {
    #[error("{message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
        reason: Reason,
        #[source]
        cause: Option<Arc<reqwest::Error>>,
    },
    #[error("{message}")]
    Permanent {
        message: String,
        #[source]
        cause: Option<Arc<reqwest::Error>>,
    },
}

/// Two errors are the same when they say the same (the cause is already in the message).
impl PartialEq for ProviderError {
    fn eq(&self, other: &ProviderError) -> bool {
        self.to_string() == other.to_string()
            && self.reason() == other.reason()
            && self.retry_after() == other.retry_after()
    }
}

impl ProviderError {
    pub(crate) fn transient(reason: Reason, message: impl Into<String>) -> ProviderError {
        ProviderError::Transient {
            message: message.into(),
            retry_after: None,
            reason,
            cause: None,
        }
    }

    /// A failure to reach the provider, classified on the error's kind: a request that cannot
    /// be built is permanent (retrying cannot fix `api_url`), a timeout or any other failure of
    /// the connection transient.
    pub(crate) fn network(what: &str, e: reqwest::Error, secret: &Secret) -> ProviderError {
        let e = e.without_url();
        let (kind, reason) = if e.is_builder() {
            ("the request cannot be built (check api_url)", None)
        } else if e.is_timeout() {
            ("timed out", Some(Reason::Timeout))
        } else if e.is_connect() {
            ("could not connect", Some(Reason::Network))
        } else if e.is_body() || e.is_decode() {
            ("reading the reply failed", Some(Reason::Network))
        } else {
            ("failed", Some(Reason::Network))
        };
        let message = secret.scrub(&format!("{what}: {kind}: {}", crate::logging::chain(&e)));
        let cause = Some(Arc::new(e));
        match reason {
            None => ProviderError::Permanent { message, cause },
            Some(reason) => ProviderError::Transient {
                message,
                retry_after: None,
                reason,
                cause,
            },
        }
    }

    /// Why a transient failure happened; `None` for a permanent one.
    pub(crate) fn reason(&self) -> Option<Reason> {
        match self {
            ProviderError::Transient { reason, .. } => Some(*reason),
            ProviderError::Permanent { .. } => None,
        }
    }

    pub(crate) fn permanent(message: impl Into<String>) -> ProviderError {
        ProviderError::Permanent {
            message: message.into(),
            cause: None,
        }
    }

    pub(crate) fn is_transient(&self) -> bool {
        matches!(self, ProviderError::Transient { .. })
    }

    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::Transient { retry_after, .. } => *retry_after,
            ProviderError::Permanent { .. } => None,
        }
    }
}

/// A purge the provider took on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Accepted {
    /// The SiteHost job id or VIMS task id, when the reply had one.
    pub job_id: Option<String>,
    pub message: String,
}

/// Where a provider job stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JobState {
    /// Still queued or running; the provider's word for it.
    Running(String),
    Done(String),
    /// Failed; the provider's state and message.
    Failed(String),
}

/// A client for one target.
#[derive(Debug)]
pub(crate) struct Provider {
    pub target: String,
    kind: TargetKind,
    http: reqwest::Client,
    vims: vims::TaskPath,
    cloudfront: cloudfront::References,
}

/// A target type, as its file declares it: the name `type:` gives, the keys it takes (besides
/// `type` and the tuning keys every target shares), and how its settings are read from them.
pub(crate) struct TargetType {
    pub name: &'static str,
    pub keys: &'static [&'static str],
    pub read: fn(&mut dyn Keys) -> TargetKind,
}

/// Every target type, from the list of `with_target_types!` (src/lib.rs). Adding one: its file
/// (settings, [`TargetType`], [`Kind`]) and a line in that list.
macro_rules! types_list {
    ([] $($variant:ident => $file:ident::$settings:ident,)*) => {
        pub(crate) const TYPES: &[TargetType] = &[$($file::TYPE,)*];
    };
}
with_target_types!(types_list);

/// What each target type's file provides besides its keys: where it sends, what purges it
/// takes, its requests and replies.
pub(crate) trait Kind {
    fn type_name(&self) -> &'static str;

    /// Where requests go (what shares a rate limit) and the credential sent there.
    fn api(&self) -> (&str, &Secret);

    /// Every credential it holds (each is scrubbed from every output).
    fn secrets(&self) -> Vec<&Secret> {
        vec![self.api().1]
    }

    /// What purges it takes: the planner asks this instead of the type.
    fn shape(&self) -> Shape;

    /// Its own pattern settings, when it takes patterns built with the rules' tuning.
    fn pattern_settings(&self) -> Option<PatternSettings> {
        None
    }

    /// It purges absolute URLs only: a rule feeding it needs `base_url`.
    fn needs_base_url(&self) -> bool {
        false
    }

    /// A fleet's endpoint (one target per endpoint: see `Config::groups`).
    fn endpoint_mut(&mut self) -> Option<&mut String> {
        None
    }

    /// What `req` will do, in words, for logs and `--dry-run`.
    fn describe(&self, req: &Request) -> String;

    /// What `req` costs, given the state directory's record (`plan` and `--dry-run` say it).
    fn cost(&self, _p: &Provider, _req: &Request, _store: Option<&crate::state::Store>) -> Option<String> {
        None
    }

    /// Sends `req` through `p` (its HTTP client, target name and per-provider memory).
    async fn purge(&self, p: &Provider, req: &Request) -> Result<Accepted, ProviderError>;

    /// The state of the provider's job `id` (a type without jobs: done when answered).
    async fn job(&self, _p: &Provider, id: &str) -> Result<JobState, ProviderError> {
        Ok(JobState::Done(format!("no job {id}")))
    }

    /// `check --remote`: do the credentials and ids work?
    async fn check(&self, p: &Provider) -> Result<String, ProviderError>;
}

/// `N URL(s) (the first five …)`, or `everything`: how a URL list is described.
pub(crate) fn url_list(urls: &[String], everything: bool) -> String {
    if everything {
        return "everything".to_string();
    }
    let shown: Vec<&str> = urls.iter().take(5).map(String::as_str).collect();
    let more = urls.len().saturating_sub(5);
    format!(
        "{} URL{} ({}{})",
        urls.len(),
        if urls.len() == 1 { "" } else { "s" },
        shown.join(" "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    )
}

/// The URLs of a request and whether it is for everything (a pattern or a stack purge is).
pub(crate) fn urls_of(req: &Request) -> (&[String], bool, &[crate::request::PendingFile]) {
    match req {
        Request::Urls {
            urls,
            everything,
            files,
        } => (urls, *everything, files),
        _ => (&[], true, &[]),
    }
}

/// The HTTP client every provider shares: rustls, connect and total timeouts, and no redirects:
/// a redirected POST would re-send the form (API key included) to another host, or turn into a
/// GET whose `{"status": true}` looks like a purge. A 3xx is an error that names its `Location`.
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("purgewatch/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the TLS backend initialises")
}

impl Provider {
    pub(crate) fn new(target: &Target, http: reqwest::Client) -> Provider {
        Provider {
            target: target.name.clone(),
            kind: target.kind.clone(),
            http,
            vims: vims::TaskPath::default(),
            cloudfront: cloudfront::References::default(),
        }
    }

    /// Requests to one account share a rate limit: the API URL and a hash of the credential.
    pub(crate) fn account(&self) -> String {
        let (url, secret) = self.kind.api();
        format!("{url}#{}", &blake3::hash(secret.expose().as_bytes()).to_hex()[..16])
    }

    /// What a request will do, in words, for logs and `--dry-run`.
    pub(crate) fn describe(&self, req: &Request) -> String {
        each_kind!(&self.kind, k => k.describe(req))
    }

    /// What `req` costs (a CloudFront target past its free paths; others cost nothing per
    /// request), given what the state directory recorded this calendar month.
    pub(crate) fn cost(&self, req: &Request, store: Option<&crate::state::Store>) -> Option<String> {
        each_kind!(&self.kind, k => k.cost(self, req, store))
    }

    /// `sitehost`, `vims`, ….
    pub(crate) fn type_name(&self) -> &'static str {
        self.kind.type_name()
    }

    pub(crate) async fn purge(&self, req: &Request) -> Result<Accepted, ProviderError> {
        each_kind!(&self.kind, k => k.purge(self, req).await)
    }

    pub(crate) async fn job(&self, id: &str) -> Result<JobState, ProviderError> {
        each_kind!(&self.kind, k => k.job(self, id).await)
    }

    /// `check --remote`: do the credentials and ids work?
    pub(crate) async fn check(&self) -> Result<String, ProviderError> {
        each_kind!(&self.kind, k => k.check(self).await)
    }
}

/// A reply, read whole (up to [`BODY_LIMIT`]) and scrubbed of the secret before anything looks
/// at it: a provider that echoes the key or token back cannot leak it into a log line, an error,
/// `status` or the state file.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub json: Option<Value>,
    pub excerpt: String,
    pub html: bool,
    pub retry_after: Option<Duration>,
    /// Where a 3xx pointed.
    pub location: Option<String>,
}

/// The most of a reply that is read: API replies are a few hundred bytes; more is an error.
pub(crate) const BODY_LIMIT: usize = 1024 * 1024;

/// Sends a request; a network error or timeout is transient, a request that cannot be built
/// (a bad URL) is permanent. `what` names the request.
pub(crate) async fn send(rb: RequestBuilder, what: &str, secret: &Secret) -> Result<Reply, ProviderError> {
    let mut resp = rb.send().await.map_err(|e| ProviderError::network(what, e, secret))?;
    let status = resp.status();
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .map(|v| secret.scrub(&String::from_utf8_lossy(v.as_bytes())));
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let is_html_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("html"));
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() > BODY_LIMIT => {
                return Err(ProviderError::transient(
                    Reason::TooLarge,
                    format!(
                        "{what}: HTTP {status}: the reply is larger than {} KiB (an API reply is a few hundred bytes): not read further",
                        BODY_LIMIT / 1024
                    ),
                ));
            }
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => return Err(ProviderError::network(what, e, secret)),
        }
    }
    let text = secret.scrub(&String::from_utf8_lossy(&body));
    let json = serde_json::from_str::<Value>(&text).ok();
    let html = json.is_none() && (is_html_type || text.trim_start().starts_with('<'));
    Ok(Reply {
        status,
        json,
        excerpt: excerpt(&text),
        html,
        retry_after,
        location,
    })
}

/// Sends a request whose reply counts by its status alone: 2xx, or the error
/// [`http_error`] makes of it.
pub(crate) async fn send_ok(rb: RequestBuilder, what: &str, secret: &Secret) -> Result<Reply, ProviderError> {
    let reply = send(rb, what, secret).await?;
    if reply.status.is_success() {
        Ok(reply)
    } else {
        Err(http_error(what, &reply))
    }
}

/// The error for a reply whose HTTP status is not a success.
pub(crate) fn http_error(what: &str, reply: &Reply) -> ProviderError {
    let said = provider_message(reply);
    let message = format!("{what}: HTTP {}{said}", reply.status);
    let s = reply.status.as_u16();
    if reply.status.is_redirection() {
        let to = reply.location.as_deref().unwrap_or("no Location given");
        return ProviderError::permanent(format!(
            "{what}: HTTP {}: redirected to {to}; provider calls follow no redirects (set api_url to the address the API answers at)",
            reply.status
        ));
    }
    let reason = match s {
        408 => Some(Reason::RequestTimeout),
        429 => Some(Reason::TooMany),
        _ if reply.status.is_server_error() && reply.html => Some(Reason::Html),
        _ if reply.status.is_server_error() => Some(Reason::ServerError),
        _ => None,
    };
    if let Some(reason) = reason {
        ProviderError::Transient {
            message,
            retry_after: reply.retry_after,
            reason,
            cause: None,
        }
    } else {
        ProviderError::Permanent { message, cause: None }
    }
}

/// Why a 2xx reply that is not a success is retried.
pub(crate) fn unsuccessful(reply: &Reply) -> Reason {
    if reply.html { Reason::Html } else { Reason::StatusFalse }
}

/// `: "<message>"` from a JSON reply's `msg`/`message`, or an excerpt of the body.
pub(crate) fn provider_message(reply: &Reply) -> String {
    let msg = reply
        .json
        .as_ref()
        .and_then(|j| j.get("msg").or_else(|| j.get("message")))
        .and_then(Value::as_str);
    match msg {
        Some(m) => format!(": provider said {m:?}"),
        None if reply.html => format!(": an HTML page instead of JSON ({})", reply.excerpt),
        None if reply.excerpt.is_empty() => ": empty reply".into(),
        None => format!(": {}", reply.excerpt),
    }
}

/// Sends one request per item (a URL, for the targets that purge one URL a request), at most
/// `parallel` at once; the first failure ends the delivery (which is sent again whole: a cache
/// or CDN takes a repeated purge as the same purge). Returns how many went through.
pub(crate) async fn for_each<T, F, Fut>(items: &[T], parallel: usize, one: F) -> Result<usize, ProviderError>
where
    T: Clone,
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Result<(), ProviderError>> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    let mut todo = items.iter();
    let mut done = 0;
    loop {
        while set.len() < parallel.max(1) {
            let Some(item) = todo.next() else { break };
            set.spawn(one(item.clone()));
        }
        match set.join_next().await {
            Some(Ok(Ok(()))) => done += 1,
            Some(Ok(Err(e))) => return Err(e),
            Some(Err(e)) => return Err(ProviderError::permanent(format!("a request task failed: {e}"))),
            None => return Ok(done),
        }
    }
}

/// A string or a number as text (`job_id` and `task_id` come as either).
pub(crate) fn id_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn excerpt(text: &str) -> String {
    let collapsed: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.chars().count() > 200 {
        format!("{}…", collapsed.chars().take(200).collect::<String>())
    } else {
        collapsed
    }
}

/// `Retry-After` as seconds or an HTTP date, capped at an hour.
pub(crate) fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    let d = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let when = httpdate_parse(v)?;
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO)
    };
    Some(d.min(Duration::from_secs(3600)))
}

fn httpdate_parse(v: &str) -> Option<std::time::SystemTime> {
    humantime::parse_rfc3339_weak(v).ok().or_else(|| {
        // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
        let parts: Vec<&str> = v.split_whitespace().collect();
        if parts.len() != 6 {
            return None;
        }
        let month = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ]
        .iter()
        .position(|m| *m == parts[2])?
            + 1;
        let iso = format!("{}-{:02}-{:0>2}T{}Z", parts[3], month, parts[1], parts[4]);
        humantime::parse_rfc3339(&iso).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Failures to reach the provider are classified on the `reqwest::Error`'s kind and keep it
    /// as their source; the secret in the URL reaches neither the message nor the source.
    #[tokio::test]
    async fn network_failures_are_classified_on_their_kind_and_keep_their_cause() {
        use std::error::Error as _;
        let secret = Secret::new("s3cr3t-key");
        let http = http_client();
        // Nothing listens on port 1 of the loopback: the connection is refused.
        let refused = send(http.get("http://127.0.0.1:1/purge?key=s3cr3t-key"), "purge", &secret)
            .await
            .unwrap_err();
        assert_eq!(refused.reason(), Some(Reason::Network), "{refused}");
        assert!(refused.to_string().contains("could not connect"), "{refused}");
        let cause = refused.source().expect("the reqwest error is kept");
        assert!(
            cause
                .downcast_ref::<Arc<reqwest::Error>>()
                .is_some_and(|e| e.is_connect())
        );
        // A URL reqwest cannot build a request from: permanent, retrying cannot fix it.
        let unbuildable = send(http.get("http://[::1/purge?key=s3cr3t-key"), "purge", &secret)
            .await
            .unwrap_err();
        assert!(!unbuildable.is_transient(), "{unbuildable}");
        assert!(unbuildable.source().is_some());
        for e in [&refused, &unbuildable] {
            let mut chain = e.to_string();
            let mut source = e.source();
            while let Some(s) = source {
                chain.push_str(&format!(" / {s} / {s:?}"));
                source = s.source();
            }
            assert!(!chain.contains("s3cr3t"), "{chain}");
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO));
        let future = httpdate_parse("Fri, 01 Jan 2100 00:00:00 GMT").unwrap();
        assert!(future > std::time::SystemTime::now());
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("999999"), Some(Duration::from_secs(3600)));
    }

    #[test]
    fn ids_are_strings_or_numbers() {
        assert_eq!(id_text(Some(&serde_json::json!("3433562"))).as_deref(), Some("3433562"));
        assert_eq!(id_text(Some(&serde_json::json!(42))).as_deref(), Some("42"));
        assert_eq!(id_text(Some(&serde_json::json!(null))), None);
    }
}

//! What the caches on the same host (or a fleet of them) share: `varnish` (varnish.rs) and
//! `nginx` (nginx.rs) send one request per URL path a few at a time, with the target's Host
//! header, and `check --remote` asks each endpoint for anything at all. Each endpoint of a
//! fleet is a target of its own (see `Config::groups`): delivered, retried, recorded and
//! reported on its own, so one cache that is down neither delays nor repeats the others' purges.

use std::time::Duration;

use percent_encoding::utf8_percent_encode;
use reqwest::Method;

use super::{Accepted, ProviderError, Reply, for_each, http_error, send};

/// URLs one delivery to a local cache carries (each its own PURGE or GET, sent a few at a time;
/// a failed delivery is sent again whole, which a cache takes as the same purge).
pub(crate) const CACHE_URLS_PER_REQUEST: usize = 100;
use crate::secret::Secret;

/// Requests to one cache in flight at once, for one delivery of URLs.
const PARALLEL: usize = 8;

pub(super) fn host_header(rb: reqwest::RequestBuilder, host: &Option<String>) -> reqwest::RequestBuilder {
    match host {
        Some(h) => rb.header(reqwest::header::HOST, h),
        None => rb,
    }
}

/// A path as a cache keys it: percent-encoded as a visitor's request would be.
fn encoded(path: &str) -> String {
    utf8_percent_encode(path, crate::escape::PATH).to_string()
}

/// Success for a cache: 2xx, and for ngx_cache_purge also 404 (the URL was not cached).
pub(super) fn judge(what: &str, reply: &Reply, not_found_ok: bool) -> Result<(), ProviderError> {
    if reply.status.is_success() || (not_found_ok && reply.status == reqwest::StatusCode::NOT_FOUND) {
        Ok(())
    } else {
        Err(http_error(what, reply))
    }
}

/// One request per URL path (`PURGE` for Varnish, `GET` of the purge location for nginx), a few
/// at a time; the first failure fails the delivery (which is sent again whole: a cache takes a
/// repeated purge as the same purge).
pub(super) async fn each(
    http: &reqwest::Client,
    endpoint: &str,
    method: &'static [u8],
    prefix: &str,
    host: &Option<String>,
    paths: &[String],
    not_found_ok: bool,
) -> Result<Accepted, ProviderError> {
    let done = for_each(paths, PARALLEL, |path: String| {
        let url = format!("{endpoint}{prefix}{}", encoded(&path));
        let verb = String::from_utf8_lossy(method).into_owned();
        let what = format!("{verb} {url}");
        let rb = host_header(
            http.request(Method::from_bytes(method).expect("a valid method name"), &url),
            host,
        );
        async move {
            let reply = send(rb, &what, &Secret::default()).await?;
            judge(&what, &reply, not_found_ok)
        }
    })
    .await?;
    Ok(Accepted {
        job_id: None,
        message: format!("{done} URL{} purged on {endpoint}", if done == 1 { "" } else { "s" }),
    })
}

/// `check --remote`: the endpoint answers HTTP at all.
pub(crate) async fn check(http: &reqwest::Client, endpoint: &str) -> Result<String, ProviderError> {
    let what = format!("GET {endpoint}/");
    let rb = http.get(format!("{endpoint}/")).timeout(Duration::from_secs(10));
    let reply = send(rb, &what, &Secret::default()).await?;
    Ok(format!("{endpoint} answers (HTTP {})", reply.status))
}

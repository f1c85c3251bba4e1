//! `webhook`: anything with an HTTP endpoint of its own. One `POST url` per request, with a JSON
//! body `{"target", "batch", "urls": [...], "everything": bool, "files": [{"rule", "path",
//! "change"}]}` of at most `max_urls` URLs. `batch` is the same on every retry of a request (an
//! idempotency key: a hash of the rest of the body). With a secret, the body is signed:
//! `X-Purgewatch-Signature: sha256=<hex HMAC-SHA256 of the body>`.
//!
//! 2xx is success. 408, 429, 5xx and network errors are retried (a `Retry-After` honoured);
//! any other status fails for good; a redirect is never followed (it is an error naming its
//! `Location`). Only the status decides: of the reply's body, at most [`BODY_KEPT`] is read, for
//! the message.

use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;

use super::{Accepted, ProviderError, Reason, parse_retry_after};
use super::{Keys, NO_SECRET, Shape, TargetKind};
use super::{Kind, Provider, TargetType, url_list, urls_of};
use crate::request::Request;

/// A webhook target: `POST url` with the batch as JSON.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub url: String,
    /// Signs each body (HMAC-SHA256), when set.
    pub secret: Option<Secret>,
    pub max_urls: usize,
}
use crate::request::PendingFile;
use crate::secret::Secret;

/// Of a reply's body, the most that is read (the status decides; the body is only quoted).
pub(crate) const BODY_KEPT: usize = 64 * 1024;

/// The JSON body for one request, and its batch id (stable for the same content).
pub(crate) fn body(target: &str, urls: &[String], everything: bool, files: &[PendingFile]) -> (String, String) {
    let files: Vec<serde_json::Value> = files
        .iter()
        .map(|f| json!({"rule": f.rule, "path": f.path, "change": f.kind.as_str()}))
        .collect();
    let content = json!({"target": target, "urls": urls, "everything": everything, "files": files});
    let batch = blake3::hash(content.to_string().as_bytes()).to_hex()[..32].to_string();
    let body = json!({"target": target, "batch": batch, "urls": urls, "everything": everything, "files": files});
    (body.to_string(), batch)
}

/// `sha256=<hex HMAC-SHA256 of body with secret>`.
pub(crate) fn signature(secret: &Secret, body: &str) -> String {
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(body.as_bytes());
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

pub(crate) async fn purge(
    http: &reqwest::Client,
    w: &Webhook,
    target: &str,
    urls: &[String],
    everything: bool,
    files: &[PendingFile],
) -> Result<Accepted, ProviderError> {
    let (body, batch) = body(target, urls, everything, files);
    let what = format!(
        "POST {} (batch {batch}, {} URLs{})",
        w.url,
        urls.len(),
        if everything { ", everything" } else { "" }
    );
    let mut rb = http
        .post(&w.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("Idempotency-Key", &batch);
    if let Some(secret) = &w.secret {
        rb = rb.header("X-Purgewatch-Signature", signature(secret, &body));
    }
    let key = w.secret.clone().unwrap_or_default();
    let resp = rb
        .body(body)
        .send()
        .await
        .map_err(|e| ProviderError::network(&what, e, &key))?;
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .map(|v| key.scrub(&String::from_utf8_lossy(v.as_bytes())));
    let said = reply_text(resp, &key).await;
    let quoted = if said.is_empty() {
        String::new()
    } else {
        format!(": {said}")
    };
    if status.is_success() {
        return Ok(Accepted {
            job_id: None,
            message: if said.is_empty() {
                format!("HTTP {status}")
            } else {
                said
            },
        });
    }
    if status.is_redirection() {
        return Err(ProviderError::permanent(format!(
            "{what}: HTTP {status}: redirected to {}; webhook calls follow no redirects (set url to the address that answers)",
            location.as_deref().unwrap_or("no Location given")
        )));
    }
    Err(refused(&what, status, &quoted, retry_after))
}

/// The start of a reply's body, scrubbed of the target's secret, on one line.
async fn reply_text(mut resp: reqwest::Response, key: &Secret) -> String {
    let mut kept = Vec::new();
    // Read what the message needs; a reply that never ends is not waited for past the client's
    // timeout, and a large one is not held.
    while kept.len() < BODY_KEPT {
        match resp.chunk().await {
            Ok(Some(chunk)) => kept.extend_from_slice(&chunk[..chunk.len().min(BODY_KEPT - kept.len())]),
            Ok(None) | Err(_) => break,
        }
    }
    drop(resp);
    let said = key.scrub(&String::from_utf8_lossy(&kept));
    said.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(200)
        .collect()
}

/// A refusal by HTTP `status`: 408, 429 and 5xx are retried (after `Retry-After`, when said).
fn refused(
    what: &str,
    status: reqwest::StatusCode,
    quoted: &str,
    retry_after: Option<std::time::Duration>,
) -> ProviderError {
    let reason = match status.as_u16() {
        408 => Some(Reason::RequestTimeout),
        429 => Some(Reason::TooMany),
        _ if status.is_server_error() => Some(Reason::ServerError),
        _ => None,
    };
    let message = format!("{what}: HTTP {status}{quoted}");
    match reason {
        Some(reason) => ProviderError::Transient {
            message,
            retry_after,
            reason,
            cause: None,
        },
        None => ProviderError::permanent(message),
    }
}

/// `check --remote`: the URL's host resolves.
pub(crate) async fn check(w: &Webhook) -> Result<String, ProviderError> {
    let url = reqwest::Url::parse(&w.url).map_err(|e| ProviderError::permanent(format!("url {}: {e}", w.url)))?;
    let host = url.host_str().unwrap_or_default().to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    match tokio::net::lookup_host((host.as_str(), port))
        .await
        .map(Iterator::count)
    {
        Ok(n) if n > 0 => Ok(format!("{host} resolves")),
        Ok(_) => Err(ProviderError::permanent(format!(
            "url {}: {host} resolves to no address",
            w.url
        ))),
        Err(e) => Err(ProviderError::permanent(format!(
            "url {}: {host} does not resolve: {e}",
            w.url
        ))),
    }
}

pub(crate) const TYPE: TargetType = TargetType {
    name: "webhook",
    keys: &["url", "secret", "secret_file", "max_urls"],
    read,
};

fn read(k: &mut dyn Keys) -> TargetKind {
    let url = k.url("url", "where to POST, like https://ops.example.com/purge");
    let secret = k.optional_secret("secret");
    let max_urls = k.max_urls(1000);
    TargetKind::Webhook(Webhook { url, secret, max_urls })
}

impl Kind for Webhook {
    fn type_name(&self) -> &'static str {
        TYPE.name
    }

    fn api(&self) -> (&str, &Secret) {
        (&self.url, self.secret.as_ref().unwrap_or(&NO_SECRET))
    }

    fn shape(&self) -> Shape {
        Shape::Urls {
            max: self.max_urls,
            absolute: true,
            everything: true,
            prefixes: false,
        }
    }

    fn describe(&self, req: &Request) -> String {
        let (urls, everything, _) = urls_of(req);
        format!("POST {}: {}", self.url, url_list(urls, everything))
    }

    async fn purge(&self, p: &Provider, req: &Request) -> Result<Accepted, ProviderError> {
        let (urls, everything, files) = urls_of(req);
        purge(&p.http, self, &p.target, urls, everything, files).await
    }

    async fn check(&self, _p: &Provider) -> Result<String, ProviderError> {
        check(self).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::ChangeKind;

    #[test]
    fn the_batch_id_is_the_same_for_the_same_content_and_the_body_is_signed() {
        let files = [PendingFile {
            rule: "site".into(),
            path: "a.html".into(),
            kind: ChangeKind::Modified,
        }];
        let urls = vec!["/a.html".to_string()];
        let (b1, id1) = body("hook", &urls, false, &files);
        let (b2, id2) = body("hook", &urls, false, &files);
        assert_eq!((b1.clone(), id1.clone()), (b2, id2));
        assert_ne!(body("hook", &urls, true, &files).1, id1);
        let v: serde_json::Value = serde_json::from_str(&b1).unwrap();
        assert_eq!(v["batch"], id1.as_str());
        assert_eq!(v["files"][0]["change"], "modified");
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature(&Secret::new("Jefe"), "what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}

//! Cloudflare: `POST {api_url}/zones/{zone_id}/purge_cache` with `Authorization: Bearer`, a body
//! of `{"files": [absolute URLs]}`, `{"prefixes": ["www.example.com/blog/"]}` for a widened
//! directory, or `{"purge_everything": true}`; at most `max_urls` entries per call (30, the
//! prefix limit, works on every plan; Cloudflare documents 100 operations per request and an
//! account-wide token bucket: Free 5 requests a minute with a bucket of 25, Pro 5/s, Business
//! 10/s, Enterprise 50/s). A reply counts only with `"success": true`. 429 (with or without
//! `Retry-After`) and 5xx are retried; `check --remote`: `GET {api_url}/zones/{zone_id}`.
//! Relied on: developers.cloudflare.com, "Purge cache" (limits) and "Purge Cached Content" (API).

use serde_json::{Value, json};

use super::{Accepted, ProviderError, Reply, http_error, send, unsuccessful};
use super::{Keys, Shape, TargetKind};
use super::{Kind, Provider, TargetType, url_list, urls_of};
use crate::request::Request;
use crate::secret::Secret;

/// A Cloudflare zone.
#[derive(Debug, Clone)]
pub struct Cloudflare {
    pub api_url: String,
    pub zone_id: String,
    pub api_token: Secret,
    /// URLs or prefixes per call.
    pub max_urls: usize,
}

/// A URL list entry ending in `/*` is a prefix: Cloudflare writes it without the scheme and
/// with its trailing `/`.
fn split(entries: &[String]) -> (Vec<String>, Vec<String>) {
    let mut files = Vec::new();
    let mut prefixes = Vec::new();
    for e in entries {
        match e.strip_suffix('*') {
            Some(p) if p.ends_with('/') => {
                let bare = p.split_once("://").map_or(p, |(_, rest)| rest);
                prefixes.push(bare.to_string());
            }
            _ => files.push(e.clone()),
        }
    }
    (files, prefixes)
}

fn success(reply: &Reply) -> bool {
    reply
        .json
        .as_ref()
        .and_then(|j| j.get("success"))
        .and_then(Value::as_bool)
        == Some(true)
}

fn errors(reply: &Reply) -> String {
    let errs = reply
        .json
        .as_ref()
        .and_then(|j| j.get("errors"))
        .and_then(Value::as_array);
    match errs {
        Some(list) if !list.is_empty() => {
            let said: Vec<String> = list
                .iter()
                .map(|e| {
                    let code = e.get("code").map(|c| c.to_string()).unwrap_or_default();
                    let msg = e.get("message").and_then(Value::as_str).unwrap_or_default();
                    format!("{code} {msg}").trim().to_string()
                })
                .collect();
            format!(": Cloudflare said {}", said.join("; "))
        }
        _ => String::new(),
    }
}

pub(crate) async fn purge(
    http: &reqwest::Client,
    c: &Cloudflare,
    entries: &[String],
    everything: bool,
) -> Result<Accepted, ProviderError> {
    let url = format!("{}/zones/{}/purge_cache", c.api_url, c.zone_id);
    let (body, said) = if everything {
        (json!({"purge_everything": true}), "everything".to_string())
    } else {
        let (files, prefixes) = split(entries);
        let said = format!("{} files, {} prefixes", files.len(), prefixes.len());
        let mut body = serde_json::Map::new();
        if !files.is_empty() {
            body.insert("files".into(), json!(files));
        }
        if !prefixes.is_empty() {
            body.insert("prefixes".into(), json!(prefixes));
        }
        (Value::Object(body), said)
    };
    let what = format!("POST {url} ({said})");
    let rb = http.post(&url).bearer_auth(c.api_token.expose()).json(&body);
    let reply = send(rb, &what, &c.api_token).await?;
    if !reply.status.is_success() {
        let mut e = http_error(&what, &reply);
        let (ProviderError::Transient { message, .. } | ProviderError::Permanent { message, .. }) = &mut e;
        message.push_str(&errors(&reply));
        return Err(e);
    }
    if !success(&reply) {
        return Err(ProviderError::transient(
            unsuccessful(&reply),
            format!(
                "{what}: HTTP {} without \"success\": true{}",
                reply.status,
                errors(&reply)
            ),
        ));
    }
    let id = reply
        .json
        .as_ref()
        .and_then(|j| j.get("result"))
        .and_then(|r| r.get("id"))
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(Accepted {
        job_id: None,
        message: match id {
            Some(id) => format!("purge {id} accepted"),
            None => "accepted".into(),
        },
    })
}

pub(crate) async fn check(http: &reqwest::Client, c: &Cloudflare) -> Result<String, ProviderError> {
    let url = format!("{}/zones/{}", c.api_url, c.zone_id);
    let what = format!("GET {url}");
    let reply = send(http.get(&url).bearer_auth(c.api_token.expose()), &what, &c.api_token).await?;
    if !reply.status.is_success() || !success(&reply) {
        let mut e = http_error(&what, &reply);
        if reply.status.is_success() {
            e = ProviderError::permanent(format!(
                "{what}: HTTP {} without \"success\": true{}",
                reply.status,
                errors(&reply)
            ));
        }
        return Err(e);
    }
    let name = reply
        .json
        .as_ref()
        .and_then(|j| j.get("result"))
        .and_then(|r| r.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_string();
    Ok(format!("zone {} is {name}", c.zone_id))
}

pub(crate) const TYPE: TargetType = TargetType {
    name: "cloudflare",
    keys: &["zone_id", "api_token", "api_token_file", "api_url", "max_urls"],
    read,
};

fn read(k: &mut dyn Keys) -> TargetKind {
    let api_url = k.api_url("https://api.cloudflare.com/client/v4");
    let api_token = k.secret("api_token");
    let zone_id = k.id(
        "zone_id",
        "the id your provider's dashboard shows",
        b"-_",
        "an id (letters, digits, `-`, `_`)",
    );
    let max_urls = k.max_urls(30);
    TargetKind::Cloudflare(Cloudflare {
        api_url,
        zone_id,
        api_token,
        max_urls,
    })
}

impl Kind for Cloudflare {
    fn type_name(&self) -> &'static str {
        TYPE.name
    }

    fn api(&self) -> (&str, &Secret) {
        (&self.api_url, &self.api_token)
    }

    fn shape(&self) -> Shape {
        Shape::Urls {
            max: self.max_urls,
            absolute: true,
            everything: true,
            prefixes: true,
        }
    }

    fn needs_base_url(&self) -> bool {
        true
    }

    fn describe(&self, req: &Request) -> String {
        let (urls, everything, _) = urls_of(req);
        format!("purge zone {}: {}", self.zone_id, url_list(urls, everything))
    }

    async fn purge(&self, p: &Provider, req: &Request) -> Result<Accepted, ProviderError> {
        let (urls, everything, _) = urls_of(req);
        purge(&p.http, self, urls, everything).await
    }

    async fn check(&self, p: &Provider) -> Result<String, ProviderError> {
        check(&p.http, self).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn prefixes_lose_their_scheme_and_files_stay_absolute() {
        let (files, prefixes) = super::split(&[
            "https://www.example.com/a.html".to_string(),
            "https://www.example.com/blog/*".to_string(),
        ]);
        assert_eq!(files, vec!["https://www.example.com/a.html"]);
        assert_eq!(prefixes, vec!["www.example.com/blog/"]);
    }
}

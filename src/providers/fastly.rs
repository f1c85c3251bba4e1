//! Fastly: one `POST {api_url}/purge/{host}{path}` per URL with `Fastly-Key` (and
//! `Fastly-Soft-Purge: 1` when `soft`: marked stale, not evicted); everything is
//! `POST {api_url}/service/{service_id}/purge_all` (never soft). URL purges go a few at a time,
//! paced by the target's `rate_limit`. 2xx is success; 429 and 5xx are retried.
//! `check --remote`: `GET {api_url}/service/{service_id}`.
//! Relied on: Fastly's purge API reference (purge_single_url `POST /purge/{cached_url}`,
//! purge_all `POST /service/{service_id}/purge_all`, the Fastly-Soft-Purge header).

use serde_json::Value;

use super::{Accepted, ProviderError, for_each, send_ok};
use super::{Keys, Shape, TargetKind};
use super::{Kind, Provider, TargetType, url_list, urls_of};
use crate::providers::cache::CACHE_URLS_PER_REQUEST;
use crate::request::Request;
use crate::secret::Secret;

/// A Fastly service.
#[derive(Debug, Clone)]
pub struct Fastly {
    pub api_url: String,
    pub service_id: String,
    pub api_token: Secret,
    /// Mark stale (`Fastly-Soft-Purge: 1`) instead of evicting.
    pub soft: bool,
}

/// URL purges in flight at once, for one delivery.
const PARALLEL: usize = 4;

pub(crate) async fn purge(
    http: &reqwest::Client,
    f: &Fastly,
    urls: &[String],
    everything: bool,
) -> Result<Accepted, ProviderError> {
    if everything {
        let url = format!("{}/service/{}/purge_all", f.api_url, f.service_id);
        let what = format!("POST {url}");
        send_ok(
            http.post(&url).header("Fastly-Key", f.api_token.expose()),
            &what,
            &f.api_token,
        )
        .await?;
        return Ok(Accepted {
            job_id: None,
            message: "purge_all accepted".into(),
        });
    }
    let done = for_each(urls, PARALLEL, |u: String| {
        let bare = u.split_once("://").map_or(u.as_str(), |(_, rest)| rest);
        let url = format!("{}/purge/{bare}", f.api_url);
        let what = format!("POST {url}");
        let mut rb = http.post(&url).header("Fastly-Key", f.api_token.expose());
        if f.soft {
            rb = rb.header("Fastly-Soft-Purge", "1");
        }
        let token = f.api_token.clone();
        async move { send_ok(rb, &what, &token).await.map(|_| ()) }
    })
    .await?;
    Ok(Accepted {
        job_id: None,
        message: format!(
            "{done} URL{} purged{}",
            if done == 1 { "" } else { "s" },
            if f.soft { " (soft)" } else { "" }
        ),
    })
}

pub(crate) async fn check(http: &reqwest::Client, f: &Fastly) -> Result<String, ProviderError> {
    let url = format!("{}/service/{}", f.api_url, f.service_id);
    let what = format!("GET {url}");
    let reply = send_ok(
        http.get(&url).header("Fastly-Key", f.api_token.expose()),
        &what,
        &f.api_token,
    )
    .await?;
    let name = reply
        .json
        .as_ref()
        .and_then(|j| j.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("?");
    Ok(format!("service {} is {name}", f.service_id))
}

pub(crate) const TYPE: TargetType = TargetType {
    name: "fastly",
    keys: &["service_id", "api_token", "api_token_file", "api_url", "soft"],
    read,
};

fn read(k: &mut dyn Keys) -> TargetKind {
    let api_url = k.api_url("https://api.fastly.com");
    let api_token = k.secret("api_token");
    let service_id = k.id(
        "service_id",
        "the id your provider's dashboard shows",
        b"-_",
        "an id (letters, digits, `-`, `_`)",
    );
    let soft = k.boolean("soft", false);
    TargetKind::Fastly(Fastly {
        api_url,
        service_id,
        api_token,
        soft,
    })
}

impl Kind for Fastly {
    fn type_name(&self) -> &'static str {
        TYPE.name
    }

    fn api(&self) -> (&str, &Secret) {
        (&self.api_url, &self.api_token)
    }

    fn shape(&self) -> Shape {
        Shape::Urls {
            max: CACHE_URLS_PER_REQUEST,
            absolute: true,
            everything: true,
            prefixes: false,
        }
    }

    fn needs_base_url(&self) -> bool {
        true
    }

    fn describe(&self, req: &Request) -> String {
        match urls_of(req) {
            (urls, false, _) => format!(
                "purge service {}{}: {}",
                self.service_id,
                if self.soft { " (soft)" } else { "" },
                url_list(urls, false)
            ),
            _ => format!("purge service {}: everything", self.service_id),
        }
    }

    async fn purge(&self, p: &Provider, req: &Request) -> Result<Accepted, ProviderError> {
        let (urls, everything, _) = urls_of(req);
        purge(&p.http, self, urls, everything).await
    }

    async fn check(&self, p: &Provider) -> Result<String, ProviderError> {
        check(&p.http, self).await
    }
}

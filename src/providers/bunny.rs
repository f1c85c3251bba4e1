//! Bunny: one `POST {api_url}/purge?url=<absolute URL, encoded>` per URL with `AccessKey`; a
//! widened directory as `https://www.example.com/blog/*`; everything is
//! `POST {api_url}/pullzone/{pull_zone_id}/purgeCache`. 2xx is success; 429 and 5xx are
//! retried. `check --remote`: `GET {api_url}/pullzone/{pull_zone_id}`.
//! Relied on: bunny.net API reference, "Purge URL" (`POST /purge`, `url` query, `AccessKey`
//! header) and "Pull Zone: Purge Cache" (`POST /pullzone/{id}/purgeCache`).

use serde_json::Value;

use super::{Accepted, ProviderError, for_each, send_ok};
use super::{Keys, Shape, TargetKind};
use super::{Kind, Provider, TargetType, url_list, urls_of};
use crate::providers::cache::CACHE_URLS_PER_REQUEST;
use crate::request::Request;
use crate::secret::Secret;

/// A Bunny pull zone.
#[derive(Debug, Clone)]
pub struct Bunny {
    pub api_url: String,
    pub pull_zone_id: String,
    pub api_key: Secret,
}

const PARALLEL: usize = 4;

pub(crate) async fn purge(
    http: &reqwest::Client,
    b: &Bunny,
    urls: &[String],
    everything: bool,
) -> Result<Accepted, ProviderError> {
    if everything {
        let url = format!("{}/pullzone/{}/purgeCache", b.api_url, b.pull_zone_id);
        let what = format!("POST {url}");
        send_ok(
            http.post(&url).header("AccessKey", b.api_key.expose()),
            &what,
            &b.api_key,
        )
        .await?;
        return Ok(Accepted {
            job_id: None,
            message: "pull zone purge accepted".into(),
        });
    }
    let done = for_each(urls, PARALLEL, |u: String| {
        let url = format!("{}/purge", b.api_url);
        let what = format!("POST {url}?url={u}");
        let rb = http
            .post(&url)
            .query(&[("url", u.as_str())])
            .header("AccessKey", b.api_key.expose());
        let key = b.api_key.clone();
        async move { send_ok(rb, &what, &key).await.map(|_| ()) }
    })
    .await?;
    Ok(Accepted {
        job_id: None,
        message: format!("{done} URL{} purged", if done == 1 { "" } else { "s" }),
    })
}

pub(crate) async fn check(http: &reqwest::Client, b: &Bunny) -> Result<String, ProviderError> {
    let url = format!("{}/pullzone/{}", b.api_url, b.pull_zone_id);
    let what = format!("GET {url}");
    let reply = send_ok(
        http.get(&url).header("AccessKey", b.api_key.expose()),
        &what,
        &b.api_key,
    )
    .await?;
    let name = reply
        .json
        .as_ref()
        .and_then(|j| j.get("Name"))
        .and_then(Value::as_str)
        .unwrap_or("?");
    Ok(format!("pull zone {} is {name}", b.pull_zone_id))
}

pub(crate) const TYPE: TargetType = TargetType {
    name: "bunny",
    keys: &["pull_zone_id", "api_key", "api_key_file", "api_url"],
    read,
};

fn read(k: &mut dyn Keys) -> TargetKind {
    let api_url = k.api_url("https://api.bunny.net");
    let api_key = k.secret("api_key");
    let pull_zone_id = k.id(
        "pull_zone_id",
        "the id your provider's dashboard shows",
        b"-_",
        "an id (letters, digits, `-`, `_`)",
    );
    TargetKind::Bunny(Bunny {
        api_url,
        pull_zone_id,
        api_key,
    })
}

impl Kind for Bunny {
    fn type_name(&self) -> &'static str {
        TYPE.name
    }

    fn api(&self) -> (&str, &Secret) {
        (&self.api_url, &self.api_key)
    }

    fn shape(&self) -> Shape {
        Shape::Urls {
            max: CACHE_URLS_PER_REQUEST,
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
        format!("purge pull zone {}: {}", self.pull_zone_id, url_list(urls, everything))
    }

    async fn purge(&self, p: &Provider, req: &Request) -> Result<Accepted, ProviderError> {
        let (urls, everything, _) = urls_of(req);
        purge(&p.http, self, urls, everything).await
    }

    async fn check(&self, p: &Provider) -> Result<String, ProviderError> {
        check(&p.http, self).await
    }
}

//! Bunny: one `POST {api_url}/purge?url=<absolute URL, encoded>` per URL with `AccessKey`; a
//! widened directory as `https://www.example.com/blog/*`; everything is
//! `POST {api_url}/pullzone/{pull_zone_id}/purgeCache`. 2xx is success; 429 and 5xx are
//! retried. `check --remote`: `GET {api_url}/pullzone/{pull_zone_id}`.
//! Relied on: bunny.net API reference, "Purge URL" (`POST /purge`, `url` query, `AccessKey`
//! header) and "Pull Zone: Purge Cache" (`POST /pullzone/{id}/purgeCache`).

use serde_json::Value;

use super::{Accepted, ProviderError, for_each, send_ok};
use crate::config::Bunny;

const PARALLEL: usize = 4;

pub async fn purge(
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

pub async fn check(http: &reqwest::Client, b: &Bunny) -> Result<String, ProviderError> {
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

//! SiteHost: `POST cloud/stack/purge_cache.json` purges a whole stack.
//!
//! Form fields go in the documented order: `apikey`, `client_id`, `server`, `name`. A reply is a
//! success only with `"status": true`; `"status": false` (often with HTTP 200) is an error. The
//! job (`return.job_id`, a string or a number) is followed with
//! `GET job/get.json?apikey=&job_id=&type=scheduler`, whose state is Pending, Running, Completed
//! or Failed.

use serde_json::Value;

use super::{Accepted, JobState, ProviderError, Reply, http_error, id_text, provider_message, send, unsuccessful};
use crate::config::SiteHost;

fn status_true(reply: &Reply) -> Option<bool> {
    reply.json.as_ref()?.get("status").and_then(Value::as_bool)
}

/// Success, or the error a 2xx reply without `"status": true` stands for.
fn ok_reply(what: &str, reply: &Reply) -> Result<(), ProviderError> {
    if !reply.status.is_success() {
        return Err(http_error(what, reply));
    }
    match status_true(reply) {
        Some(true) => Ok(()),
        _ => Err(ProviderError::transient(
            unsuccessful(reply),
            format!(
                "{what}: HTTP {} without \"status\": true{}",
                reply.status,
                provider_message(reply)
            ),
        )),
    }
}

pub async fn purge(http: &reqwest::Client, s: &SiteHost) -> Result<Accepted, ProviderError> {
    let what = format!(
        "POST {}/cloud/stack/purge_cache.json (stack {} on {})",
        s.api_url, s.stack, s.server
    );
    let form = [
        ("apikey", s.api_key.expose()),
        ("client_id", s.client_id.as_str()),
        ("server", s.server.as_str()),
        ("name", s.stack.as_str()),
    ];
    let rb = http
        .post(format!("{}/cloud/stack/purge_cache.json", s.api_url))
        .form(&form);
    let reply = send(rb, &what, &s.api_key).await?;
    ok_reply(&what, &reply)?;
    let json = reply.json.as_ref();
    Ok(Accepted {
        job_id: id_text(json.and_then(|j| j.get("return")).and_then(|r| r.get("job_id"))),
        message: json
            .and_then(|j| j.get("msg"))
            .and_then(Value::as_str)
            .unwrap_or("Successful")
            .to_string(),
    })
}

pub async fn job(http: &reqwest::Client, s: &SiteHost, id: &str) -> Result<JobState, ProviderError> {
    let what = format!("GET {}/job/get.json (job {id})", s.api_url);
    let rb = http.get(format!("{}/job/get.json", s.api_url)).query(&[
        ("apikey", s.api_key.expose()),
        ("job_id", id),
        ("type", "scheduler"),
    ]);
    let reply = send(rb, &what, &s.api_key).await?;
    ok_reply(&what, &reply)?;
    let ret = reply.json.as_ref().and_then(|j| j.get("return"));
    let state = ret
        .and_then(|r| r.get("state").or_else(|| r.get("status")))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let message = ret
        .and_then(|r| r.get("message").or_else(|| r.get("msg")))
        .and_then(Value::as_str)
        .unwrap_or("");
    let said = if message.is_empty() {
        state.clone()
    } else {
        format!("{state}: {message}")
    };
    Ok(match state.to_ascii_lowercase().as_str() {
        "completed" | "complete" | "success" | "done" => JobState::Done(said),
        "failed" | "failure" | "error" | "cancelled" => JobState::Failed(said),
        _ => JobState::Running(if said.is_empty() { "unknown".into() } else { said }),
    })
}

pub async fn check(http: &reqwest::Client, s: &SiteHost) -> Result<String, ProviderError> {
    let what = format!(
        "GET {}/cloud/stack/get.json (stack {} on {})",
        s.api_url, s.stack, s.server
    );
    let rb = http.get(format!("{}/cloud/stack/get.json", s.api_url)).query(&[
        ("apikey", s.api_key.expose()),
        ("client_id", s.client_id.as_str()),
        ("server", s.server.as_str()),
        ("name", s.stack.as_str()),
    ]);
    let reply = send(rb, &what, &s.api_key).await?;
    if !reply.status.is_success() {
        return Err(http_error(&what, &reply));
    }
    match status_true(&reply) {
        Some(true) => Ok(format!(
            "stack {} found on {} for client {}",
            s.stack, s.server, s.client_id
        )),
        _ => Err(ProviderError::permanent(format!(
            "{what}: the provider refused{}",
            provider_message(&reply)
        ))),
    }
}

//! SiteHost: `POST cloud/stack/purge_cache.json` purges a whole stack.
//!
//! Form fields go in the documented order: `apikey`, `client_id`, `server`, `name`. A reply is a
//! success only with `"status": true`; `"status": false` (often with HTTP 200) is an error. The
//! job (`return.job_id`, a string or a number) is followed with
//! `GET job/get.json?apikey=&job_id=&type=scheduler`, whose state is Pending, Running, Completed
//! or Failed.

use serde_json::Value;

use super::{Accepted, JobState, ProviderError, Reply, http_error, id_text, provider_message, send, unsuccessful};
use super::{Keys, Shape, TargetKind};
use super::{Kind, Provider, TargetType};
use crate::request::Request;
use crate::secret::Secret;

/// A SiteHost stack.
#[derive(Debug, Clone)]
pub struct SiteHost {
    pub api_url: String,
    pub api_key: Secret,
    pub client_id: String,
    pub server: String,
    pub stack: String,
}

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

pub(crate) async fn purge(http: &reqwest::Client, s: &SiteHost) -> Result<Accepted, ProviderError> {
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

pub(crate) async fn job(http: &reqwest::Client, s: &SiteHost, id: &str) -> Result<JobState, ProviderError> {
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

pub(crate) async fn check(http: &reqwest::Client, s: &SiteHost) -> Result<String, ProviderError> {
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

/// Where the API is when the rules do not say.
pub const SITEHOST_API_URL: &str = "https://api.sitehost.nz/1.3";

pub(crate) const TYPE: TargetType = TargetType {
    name: "sitehost",
    keys: &["api_url", "api_key", "api_key_file", "client_id", "server", "stack"],
    read,
};

fn read(k: &mut dyn Keys) -> TargetKind {
    let api_url = k.api_url(SITEHOST_API_URL);
    let api_key = k.secret("api_key");
    let client_id = k
        .required("client_id", "your SiteHost client id, like 12345")
        .and_then(|id| k.whole_number("client_id", id));
    let server = k.required("server", "the server the stack is on, like ch-server1");
    let stack = k.required("stack", "the stack name");
    TargetKind::SiteHost(SiteHost {
        api_url,
        api_key,
        client_id: client_id.unwrap_or_default(),
        server: server.unwrap_or_default(),
        stack: stack.unwrap_or_default(),
    })
}

impl Kind for SiteHost {
    fn type_name(&self) -> &'static str {
        TYPE.name
    }

    fn api(&self) -> (&str, &Secret) {
        (&self.api_url, &self.api_key)
    }

    /// Only the whole stack, ever.
    fn shape(&self) -> Shape {
        Shape::Whole
    }

    fn describe(&self, _req: &Request) -> String {
        format!("purge stack {} on {}", self.stack, self.server)
    }

    async fn purge(&self, p: &Provider, _req: &Request) -> Result<Accepted, ProviderError> {
        purge(&p.http, self).await
    }

    async fn job(&self, p: &Provider, id: &str) -> Result<JobState, ProviderError> {
        job(&p.http, self, id).await
    }

    async fn check(&self, p: &Provider) -> Result<String, ProviderError> {
        check(&p.http, self).await
    }
}

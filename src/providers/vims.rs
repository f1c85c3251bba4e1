//! VIMS CDN: `POST services/cdn/<cdn_id>/purge` with `{"target": <host or "all">, "pattern": <regex
//! or "*">}` and the raw token in `Authorization`, exactly as the VIMS document shows.
//!
//! Replies: 200 with `"status": "ok"` and a `task_id` (string or number); 400 with `"status":
//! "error"` is permanent ("failed creation"); a 200 with `"status": "error"` is retried.
//!
//! The task URL is ambiguous in the document: its heading says `GET /api/tasks/<id>`, its curl
//! example `/api/task/<id>`. The heading is tried first; on a 404 the other form is tried and the
//! one that answers is remembered for the life of the process.

use std::sync::atomic::{AtomicU8, Ordering};

use serde_json::{Value, json};

use super::{Accepted, JobState, ProviderError, Reply, http_error, id_text, provider_message, send, unsuccessful};
use super::{Keys, PatternSettings, Shape, TargetKind};
use super::{Kind, Provider, TargetType};
use crate::request::Request;
use crate::secret::Secret;

/// A VIMS CDN service.
#[derive(Debug, Clone)]
pub struct Vims {
    pub api_url: String,
    pub token: Secret,
    pub cdn_id: String,
    /// `all`, or one host (vm) id.
    pub host: String,
    pub patterns: PatternSettings,
}

/// Which task URL form works: 0 unknown, 1 `tasks/`, 2 `task/`.
#[derive(Debug, Default)]
pub(crate) struct TaskPath(AtomicU8);

fn status_of(reply: &Reply) -> Option<&str> {
    reply.json.as_ref()?.get("status").and_then(Value::as_str)
}

fn ok_reply(what: &str, reply: &Reply) -> Result<(), ProviderError> {
    if !reply.status.is_success() {
        return Err(http_error(what, reply));
    }
    match status_of(reply) {
        Some("ok") => Ok(()),
        _ => Err(ProviderError::transient(
            unsuccessful(reply),
            format!(
                "{what}: HTTP {} without \"status\": \"ok\"{}",
                reply.status,
                provider_message(reply)
            ),
        )),
    }
}

pub(crate) async fn purge(http: &reqwest::Client, v: &Vims, pattern: &str) -> Result<Accepted, ProviderError> {
    let url = format!("{}/services/cdn/{}/purge", v.api_url, v.cdn_id);
    let what = format!("POST {url}");
    let rb = http
        .post(&url)
        .header(reqwest::header::AUTHORIZATION, v.token.expose())
        .json(&json!({ "target": v.host, "pattern": pattern }));
    let reply = send(rb, &what, &v.token).await?;
    ok_reply(&what, &reply)?;
    let json = reply.json.as_ref();
    Ok(Accepted {
        job_id: id_text(json.and_then(|j| j.get("task_id"))),
        message: json
            .and_then(|j| j.get("message"))
            .and_then(Value::as_str)
            .unwrap_or("purge running")
            .to_string(),
    })
}

/// Whether a task id can stand as one segment of the task URL as it is: letters, digits and
/// `-_.:`, not a dot segment. Anything else (a reply's `../../elsewhere`) is never put in a URL
/// that carries the token.
fn safe_task_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && id != "."
        && id != ".."
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

pub(crate) async fn task(
    http: &reqwest::Client,
    v: &Vims,
    id: &str,
    path: &TaskPath,
) -> Result<JobState, ProviderError> {
    if !safe_task_id(id) {
        return Err(ProviderError::permanent(format!(
            "the task id {:?} is not a plain id (letters, digits, -_.:): not followed",
            id.chars().take(80).collect::<String>()
        )));
    }
    let forms: &[u8] = match path.0.load(Ordering::Relaxed) {
        2 => &[2],
        1 => &[1],
        _ => &[1, 2],
    };
    let mut last = None;
    for &form in forms {
        let url = format!("{}/{}/{id}", v.api_url, if form == 1 { "tasks" } else { "task" });
        let what = format!("GET {url}");
        let rb = http.get(&url).header(reqwest::header::AUTHORIZATION, v.token.expose());
        let reply = send(rb, &what, &v.token).await?;
        if reply.status == reqwest::StatusCode::NOT_FOUND && forms.len() > 1 {
            last = Some(http_error(&what, &reply));
            continue;
        }
        ok_reply(&what, &reply)?;
        path.0.store(form, Ordering::Relaxed);
        let data = reply.json.as_ref().and_then(|j| j.get("data"));
        let state = data
            .and_then(|d| d.get("status"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let output = data.and_then(|d| d.get("output")).and_then(Value::as_str).unwrap_or("");
        let said = if output.is_empty() {
            state.clone()
        } else {
            format!("{state}: {output}")
        };
        return Ok(match state.to_ascii_uppercase().as_str() {
            "SUCCESS" | "DONE" | "COMPLETED" | "FINISHED" => JobState::Done(said),
            "FAILURE" | "FAILED" | "REVOKED" | "ERROR" => JobState::Failed(said),
            _ => JobState::Running(if said.is_empty() { "unknown".into() } else { said }),
        });
    }
    Err(last.unwrap_or_else(|| ProviderError::permanent("no task URL answered")))
}

pub(crate) async fn check(http: &reqwest::Client, v: &Vims) -> Result<String, ProviderError> {
    let url = format!("{}/services/cdn/", v.api_url);
    let what = format!("GET {url}");
    let rb = http.get(&url).header(reqwest::header::AUTHORIZATION, v.token.expose());
    let reply = send(rb, &what, &v.token).await?;
    if !reply.status.is_success() {
        return Err(http_error(&what, &reply));
    }
    if status_of(&reply) != Some("ok") {
        return Err(ProviderError::permanent(format!(
            "{what}: the provider refused{}",
            provider_message(&reply)
        )));
    }
    let services = reply
        .json
        .as_ref()
        .and_then(|j| j.get("data"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(service) = services
        .iter()
        .find(|s| id_text(s.get("id")).as_deref() == Some(v.cdn_id.as_str()))
    else {
        let known: Vec<String> = services.iter().filter_map(|s| id_text(s.get("id"))).collect();
        return Err(ProviderError::permanent(format!(
            "{what}: no CDN service with id {} (the token sees: {})",
            v.cdn_id,
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        )));
    };
    if v.host == "all" {
        return Ok(format!("cdn {} found", v.cdn_id));
    }
    let subs = service
        .get("sub_services")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ids: Vec<String> = subs
        .iter()
        .flat_map(|s| [id_text(s.get("vm").and_then(|vm| vm.get("id"))), id_text(s.get("id"))])
        .flatten()
        .collect();
    if ids.contains(&v.host) {
        Ok(format!("cdn {} found with host {}", v.cdn_id, v.host))
    } else {
        let vm_ids: Vec<String> = subs
            .iter()
            .filter_map(|s| id_text(s.get("vm").and_then(|vm| vm.get("id"))))
            .collect();
        Err(ProviderError::permanent(format!(
            "{what}: cdn {} has no host {} (its hosts: {})",
            v.cdn_id,
            v.host,
            if vm_ids.is_empty() {
                "none".into()
            } else {
                vm_ids.join(", ")
            }
        )))
    }
}

/// Where the API is when the rules do not say.
pub const VIMS_API_URL: &str = "https://vims.planisys.net/api";

pub(crate) const TYPE: TargetType = TargetType {
    name: "vims",
    keys: &["api_url", "token", "token_file", "cdn_id", "host"],
    read,
};

fn read(k: &mut dyn Keys) -> TargetKind {
    let api_url = k.api_url(VIMS_API_URL);
    let token = k.secret("token");
    let cdn_id = k
        .required("cdn_id", "the CDN service id from VIMS, like 7")
        .and_then(|id| k.whole_number("cdn_id", id));
    let host = match k.string("host") {
        Some(h) if h == "all" => Some(h),
        Some(h) => k.whole_number("host", h),
        None if k.has("host") => None,
        None => Some("all".into()),
    };
    TargetKind::Vims(Vims {
        api_url,
        token,
        cdn_id: cdn_id.unwrap_or_default(),
        host: host.unwrap_or_default(),
        patterns: k.patterns(),
    })
}

impl Kind for Vims {
    fn type_name(&self) -> &'static str {
        TYPE.name
    }

    fn api(&self) -> (&str, &Secret) {
        (&self.api_url, &self.token)
    }

    fn shape(&self) -> Shape {
        Shape::Patterns {
            max_bytes: self.patterns.max_bytes,
        }
    }

    fn pattern_settings(&self) -> Option<PatternSettings> {
        Some(self.patterns.clone())
    }

    fn describe(&self, req: &Request) -> String {
        match req {
            Request::Pattern(p) => format!("purge cdn {} host {} pattern {p:?}", self.cdn_id, self.host),
            _ => format!("purge cdn {} host {} pattern \"*\"", self.cdn_id, self.host),
        }
    }

    async fn purge(&self, p: &Provider, req: &Request) -> Result<Accepted, ProviderError> {
        let pattern = match req {
            Request::Pattern(p) => p.as_str(),
            _ => "*",
        };
        purge(&p.http, self, pattern).await
    }

    async fn job(&self, p: &Provider, id: &str) -> Result<JobState, ProviderError> {
        task(&p.http, self, id, &p.vims).await
    }

    async fn check(&self, p: &Provider) -> Result<String, ProviderError> {
        check(&p.http, self).await
    }
}

#[cfg(test)]
mod task_id_tests {
    #[test]
    fn only_plain_task_ids_go_into_the_task_url() {
        for ok in ["123", "a1b2-c3_d4", "celery:task.5"] {
            assert!(super::safe_task_id(ok), "{ok}");
        }
        for bad in ["", ".", "..", "../x", "a/b", "a?b", "a#b", "a%2Fb", "x y", "é"] {
            assert!(!super::safe_task_id(bad), "{bad}");
        }
    }
}

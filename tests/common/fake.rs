//! A local fake of the SiteHost and VIMS APIs: an in-process axum server that records every
//! request and answers from a script (then with documented success replies).
//! Shared by the integration tests and `examples/mock_provider.rs`.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: HashMap<String, String>,
    pub body: String,
    pub at: Instant,
}

impl Recorded {
    /// Form fields of a urlencoded body, in order.
    pub fn form(&self) -> Vec<(String, String)> {
        url_decode_pairs(&self.body)
    }

    pub fn query_pairs(&self) -> Vec<(String, String)> {
        url_decode_pairs(&self.query)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The VIMS purge pattern.
    pub fn pattern(&self) -> String {
        self.json()["pattern"].as_str().unwrap_or_default().to_string()
    }
}

fn url_decode_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let s = s.replace('+', " ");
    percent_encoding::percent_decode_str(&s)
        .decode_utf8_lossy()
        .into_owned()
}

/// A scripted reply.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(status: u16, body: serde_json::Value) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string(),
        }
    }

    /// A VIMS-style error reply: `{"status": "error", "message": …}`.
    pub fn vims_error(status: u16, message: &str) -> Reply {
        Reply::json(status, serde_json::json!({"status": "error", "message": message}))
    }

    pub fn html(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "text/html".into())],
            body: body.into(),
        }
    }

    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }
}

/// Serves `app` on 127.0.0.1:`port` (0: any free port) from a thread of its own; returns the
/// address once it listens.
pub fn serve(app: Router, port: u16) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the test server started")
}

/// Which endpoint a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    SiteHostPurge,
    SiteHostJob,
    SiteHostGet,
    VimsPurge,
    VimsTask,
    VimsList,
    /// A webhook target's endpoint (`POST /hook`): the provider-neutral fake.
    Hook,
    /// Cloudflare (`api_url` = `{base}/cf`): purge_cache, and the zone.
    CfPurge,
    CfZone,
    /// Fastly (`api_url` = `{base}/fastly`): a URL purge, purge_all, the service.
    FastlyPurge,
    FastlyAll,
    FastlyService,
    /// Bunny (`api_url` = `{base}/bunny`): a URL purge, the pull zone's purge, the pull zone.
    BunnyPurge,
    BunnyAll,
    BunnyZone,
    Other,
}

/// The tokens the CDN fakes take (anything else is refused with their 401/403 shapes).
pub const CF_TOKEN: &str = "cf-token-abcdef123";
pub const FASTLY_TOKEN: &str = "fastly-token-abcdef123";
pub const BUNNY_KEY: &str = "bunny-key-abcdef123";
/// Cloudflare's per-call maximum the fake enforces (URLs and prefixes together).
pub const CF_MAX_PER_CALL: usize = 30;

pub fn route_of(method: &str, path: &str) -> Route {
    match (method, path) {
        ("POST", "/1.3/cloud/stack/purge_cache.json") => Route::SiteHostPurge,
        ("GET", "/1.3/job/get.json") => Route::SiteHostJob,
        ("GET", "/1.3/cloud/stack/get.json") => Route::SiteHostGet,
        ("GET", "/api/services/cdn/") | ("GET", "/api/services/cdn") => Route::VimsList,
        ("POST", p) if p.starts_with("/api/services/cdn/") && p.ends_with("/purge") => Route::VimsPurge,
        ("GET", p) if p.starts_with("/api/tasks/") || p.starts_with("/api/task/") => Route::VimsTask,
        ("POST", "/hook") => Route::Hook,
        ("POST", p) if p.starts_with("/cf/zones/") && p.ends_with("/purge_cache") => Route::CfPurge,
        ("GET", p) if p.starts_with("/cf/zones/") => Route::CfZone,
        ("POST", p) if p.starts_with("/fastly/purge/") => Route::FastlyPurge,
        ("POST", p) if p.starts_with("/fastly/service/") && p.ends_with("/purge_all") => Route::FastlyAll,
        ("GET", p) if p.starts_with("/fastly/service/") => Route::FastlyService,
        ("POST", "/bunny/purge") => Route::BunnyPurge,
        ("POST", p) if p.starts_with("/bunny/pullzone/") && p.ends_with("/purgeCache") => Route::BunnyAll,
        ("GET", p) if p.starts_with("/bunny/pullzone/") => Route::BunnyZone,
        _ => Route::Other,
    }
}

#[derive(Default)]
struct Inner {
    log: Vec<Recorded>,
    scripts: HashMap<Route, VecDeque<Reply>>,
    job_state: String,
    task_state: String,
    next_id: u64,
    verbose: bool,
    /// Serve VIMS tasks only at `/api/task/<id>` (the curl example's form).
    singular_task_path: bool,
}

#[derive(Clone)]
pub struct Fake {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl Fake {
    /// Starts the fake on 127.0.0.1 (port 0: any free port) in a thread of its own.
    pub fn start() -> Fake {
        Fake::start_on(0, false)
    }

    pub fn start_on(port: u16, verbose: bool) -> Fake {
        let inner = Arc::new(Mutex::new(Inner {
            job_state: "Completed".into(),
            task_state: "SUCCESS".into(),
            next_id: 1000,
            verbose,
            ..Default::default()
        }));
        let addr = serve(Router::new().fallback(handle).with_state(inner.clone()), port);
        Fake { addr, inner }
    }

    pub fn sitehost_url(&self) -> String {
        format!("http://{}/1.3", self.addr)
    }

    pub fn vims_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// The webhook endpoint.
    pub fn hook_url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Replies for the next requests to `route`, in order; then the default success.
    pub fn script(&self, route: Route, replies: Vec<Reply>) {
        self.inner
            .lock()
            .unwrap()
            .scripts
            .entry(route)
            .or_default()
            .extend(replies);
    }

    /// Drops the replies still scripted for `route`: it answers with the default success.
    pub fn unscript(&self, route: Route) {
        self.inner.lock().unwrap().scripts.remove(&route);
    }

    pub fn set_job_state(&self, s: &str) {
        self.inner.lock().unwrap().job_state = s.into();
    }

    pub fn set_task_state(&self, s: &str) {
        self.inner.lock().unwrap().task_state = s.into();
    }

    pub fn singular_task_path(&self) {
        self.inner.lock().unwrap().singular_task_path = true;
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().log.clone()
    }

    pub fn requests_to(&self, route: Route) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| route_of(&r.method, &r.path) == route)
            .collect()
    }

    pub fn sitehost_purges(&self) -> Vec<Recorded> {
        self.requests_to(Route::SiteHostPurge)
    }

    pub fn vims_purges(&self) -> Vec<Recorded> {
        self.requests_to(Route::VimsPurge)
    }
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let rec = Recorded {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or_default().to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
        at: Instant::now(),
    };
    let route = route_of(&rec.method, &rec.path);
    let mut g = inner.lock().unwrap();
    if g.verbose {
        let q = if rec.query.is_empty() {
            String::new()
        } else {
            format!("?{}", rec.query)
        };
        println!("{} {}{}", rec.method, rec.path, q);
        if let Some(a) = rec.headers.get("authorization") {
            println!("  authorization: {a}");
        }
        if !rec.body.is_empty() {
            println!("  body: {}", rec.body);
        }
    }
    g.log.push(rec.clone());
    let scripted = g.scripts.get_mut(&route).and_then(|q| q.pop_front());
    g.next_id += 1;
    let id = g.next_id;
    let header = |k: &str| rec.headers.get(k).cloned().unwrap_or_default();
    let cf_ok = header("authorization") == format!("Bearer {CF_TOKEN}");
    let cf_entries = {
        let v = rec.json();
        ["files", "prefixes"]
            .iter()
            .map(|k| v[*k].as_array().map_or(0, |a| a.len()))
            .sum::<usize>()
    };
    let reply = scripted.unwrap_or_else(|| match route {
        Route::CfPurge | Route::CfZone if !cf_ok => Reply::json(
            403,
            serde_json::json!({"success": false, "errors": [{"code": 10000, "message": "Authentication error"}], "messages": [], "result": null}),
        ),
        Route::CfPurge if cf_entries > CF_MAX_PER_CALL => Reply::json(
            400,
            serde_json::json!({"success": false, "errors": [{"code": 1015, "message": format!("You may only purge up to {CF_MAX_PER_CALL} URLs or prefixes at a time")}], "messages": [], "result": null}),
        ),
        Route::CfPurge => Reply::json(200, serde_json::json!({"success": true, "errors": [], "messages": [], "result": {"id": format!("purge-{id}")}})),
        Route::CfZone => Reply::json(200, serde_json::json!({"success": true, "errors": [], "messages": [], "result": {"id": "zone", "name": "example.com"}})),
        Route::FastlyPurge | Route::FastlyAll | Route::FastlyService if header("fastly-key") != FASTLY_TOKEN => {
            Reply::json(403, serde_json::json!({"msg": "Provided credentials are missing or invalid"}))
        }
        Route::FastlyPurge => Reply::json(200, serde_json::json!({"status": "ok", "id": format!("{id}")})),
        Route::FastlyAll => Reply::json(200, serde_json::json!({"status": "ok"})),
        Route::FastlyService => Reply::json(200, serde_json::json!({"id": "svc", "name": "www"})),
        Route::BunnyPurge | Route::BunnyAll | Route::BunnyZone if header("accesskey") != BUNNY_KEY => {
            Reply::json(401, serde_json::json!({"Message": "Authorization has been denied for this request."}))
        }
        Route::BunnyPurge => Reply::json(200, serde_json::json!({})),
        Route::BunnyAll => Reply::json(204, serde_json::json!({})),
        Route::BunnyZone => Reply::json(200, serde_json::json!({"Id": 12345, "Name": "www"})),
        Route::SiteHostPurge => {
            Reply::json(200, serde_json::json!({"return": {"job_id": id.to_string()}, "msg": "Successful", "status": true}))
        }
        Route::SiteHostJob => Reply::json(
            200,
            serde_json::json!({"return": {"id": rec.query_pairs().iter().find(|(k, _)| k == "job_id").map(|(_, v)| v.clone()), "state": g.job_state}, "msg": "Successful", "status": true}),
        ),
        Route::SiteHostGet => Reply::json(200, serde_json::json!({"return": {"name": "mystack"}, "msg": "Successful", "status": true})),
        Route::VimsPurge => Reply::json(200, serde_json::json!({"message": "purge running", "status": "ok", "task_id": id})),
        Route::VimsTask if g.singular_task_path && rec.path.starts_with("/api/tasks/") => {
            Reply::json(404, serde_json::json!({"message": "not found", "status": "error"}))
        }
        Route::VimsTask => {
            let tid: u64 = rec.path.rsplit('/').next().and_then(|s| s.parse().ok()).unwrap_or(0);
            Reply::json(
                200,
                serde_json::json!({"data": {"id": tid, "status": g.task_state, "output": "", "percentage": 100, "vims_task_type": "cdn_purge"}, "message": "bundle found", "status": "ok"}),
            )
        }
        Route::VimsList => Reply::json(
            200,
            serde_json::json!({"count": 1, "data": [{"id": 7, "active": true, "description": "CDN", "sub_services": [{"id": 5, "type": {"id": 1, "name": "CDN_HOST"}, "vm": {"id": 42, "name": "cdn-1.example"}}], "type": {"id": 1, "name": "CDN"}}], "message": "found", "status": "ok"}),
        ),
        Route::Hook => Reply::json(200, serde_json::json!({"ok": true})),
        Route::Other => Reply::json(404, serde_json::json!({"message": "no such endpoint in the fake", "status": "error"})),
    });
    drop(g);
    let mut resp = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
    for (k, v) in reply.headers {
        resp.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            axum::http::HeaderValue::from_str(&v).unwrap(),
        );
    }
    resp
}

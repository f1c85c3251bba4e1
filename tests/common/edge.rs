//! A caching HTTP proxy in front of a watched tree, the way a CDN edge behaves: it serves files
//! from the tree (an index file for a directory URL, 404 for what is not there), keeps what it
//! served, and forgets a cached URL only when the fake VIMS API has received a purge whose
//! pattern matches it (the edge reads the fake's log, so a purge really evicts). Modes make it
//! misbehave: ignore the first purge, never evict, answer gzip-encoded.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::fake::Fake;

#[derive(Default)]
struct Inner {
    cache: HashMap<String, (u16, Vec<u8>)>,
    /// Purges read from the fake so far.
    purges_seen: usize,
    ignore_next_purge: bool,
    never_evict: bool,
    gzip: bool,
    /// Every URL path asked for, in order.
    log: Vec<String>,
    /// Answers sent gzip-encoded.
    gzipped: usize,
}

#[derive(Clone)]
pub struct Edge {
    pub base_url: String,
    inner: Arc<Mutex<Inner>>,
}

struct Shared {
    root: PathBuf,
    fake: Fake,
    inner: Arc<Mutex<Inner>>,
}

impl Edge {
    /// Starts the edge for `root` (on 127.0.0.1, any free port), evicting on `fake`'s purges.
    pub fn start(root: PathBuf, fake: &Fake) -> Edge {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let shared = Arc::new(Shared {
            root,
            fake: fake.clone(),
            inner: inner.clone(),
        });
        let addr = super::fake::serve(Router::new().fallback(serve).with_state(shared), 0);
        Edge {
            base_url: format!("http://{addr}"),
            inner,
        }
    }

    pub fn ignore_next_purge(&self) {
        self.inner.lock().unwrap().ignore_next_purge = true;
    }

    pub fn never_evict(&self) {
        self.inner.lock().unwrap().never_evict = true;
    }

    pub fn gzip(&self) {
        self.inner.lock().unwrap().gzip = true;
    }

    /// Asks for `path` as a visitor would (filling the cache).
    pub fn visit(&self, path: &str) -> (u16, Vec<u8>) {
        let (code, body) = super::http_get(self.base_url.trim_start_matches("http://"), path);
        (code, body.into_bytes())
    }

    /// How many answers went out gzip-encoded.
    pub fn gzipped(&self) -> usize {
        self.inner.lock().unwrap().gzipped
    }

    /// How often `path` was asked for.
    pub fn hits(&self, path: &str) -> usize {
        self.inner.lock().unwrap().log.iter().filter(|p| *p == path).count()
    }
}

async fn serve(State(s): State<Arc<Shared>>, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().to_string();
    let purges = s.fake.vims_purges();
    let mut g = s.inner.lock().unwrap();
    g.log.push(path.clone());
    for p in purges.iter().skip(g.purges_seen) {
        if std::mem::take(&mut g.ignore_next_purge) || g.never_evict {
            continue;
        }
        let pattern = p.pattern();
        if pattern == "*" {
            g.cache.clear();
        } else if let Ok(re) = regex::Regex::new(&pattern) {
            g.cache.retain(|k, _| !re.is_match(k));
        }
    }
    g.purges_seen = purges.len();
    let (status, body, hit) = match g.cache.get(&path) {
        Some((st, b)) => (*st, b.clone(), true),
        None => {
            // As a web server does: the cache key is the path as asked, the file its decoding.
            let decoded = percent_encoding::percent_decode_str(&path)
                .decode_utf8_lossy()
                .into_owned();
            let rel = decoded.trim_start_matches('/');
            let mut file = s.root.join(rel);
            if path.ends_with('/') || file.is_dir() {
                file = file.join("index.html");
            }
            let (st, b) = match std::fs::read(&file) {
                Ok(b) => (200, b),
                Err(_) => (404, b"not found".to_vec()),
            };
            g.cache.insert(path.clone(), (st, b.clone()));
            (st, b, false)
        }
    };
    let accepts_gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("gzip"));
    let gzip = g.gzip && accepts_gzip;
    g.gzipped += usize::from(gzip);
    drop(g);
    let mut resp = if gzip {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&body).unwrap();
        let mut r = (StatusCode::from_u16(status).unwrap(), enc.finish().unwrap()).into_response();
        r.headers_mut()
            .insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
        r
    } else {
        (StatusCode::from_u16(status).unwrap(), body).into_response()
    };
    resp.headers_mut()
        .insert("x-cache", if hit { "HIT" } else { "MISS" }.parse().unwrap());
    resp
}

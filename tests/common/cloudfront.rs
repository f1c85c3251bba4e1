//! A fake of CloudFront's invalidation API that keeps its documented shapes and limits: every
//! request's AWS Signature Version 4 checked (computed here independently, from the
//! specification, with hmac and sha2), `CallerReference` de-duplicated (the same batch again is
//! the invalidation made before; another batch with it is 409), at most 3,000 paths in progress
//! (past it, `TooManyInvalidationsInProgress`), an invalidation `Completed` once it has been
//! asked about once. `drop_next_reply` makes the next invalidation go through but its reply
//! be lost (a 503 after the work is done), as a broken connection would.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

pub const ACCESS_KEY: &str = "AKIDEXAMPLEPURGEWATCH";
pub const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY-pw";
pub const DISTRIBUTION: &str = "EDFDVBD6EXAMPLE";
pub const MAX_IN_PROGRESS: usize = 3000;

#[derive(Default)]
struct Inner {
    /// CallerReference → (id, paths).
    by_reference: HashMap<String, (String, Vec<String>)>,
    /// id → (paths, times asked about).
    invalidations: HashMap<String, (Vec<String>, u32)>,
    created: usize,
    drop_next_reply: bool,
    bad_signatures: usize,
    posts: usize,
}

#[derive(Clone)]
pub struct CloudFront {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl CloudFront {
    pub fn start() -> CloudFront {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let addr = super::fake::serve(Router::new().fallback(handle).with_state(inner.clone()), 0);
        CloudFront { addr, inner }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Invalidations created (a retried batch counted once).
    pub fn created(&self) -> usize {
        self.inner.lock().unwrap().created
    }

    pub fn posts(&self) -> usize {
        self.inner.lock().unwrap().posts
    }

    pub fn bad_signatures(&self) -> usize {
        self.inner.lock().unwrap().bad_signatures
    }

    /// Every path invalidated, in order.
    pub fn paths(&self) -> Vec<Vec<String>> {
        let g = self.inner.lock().unwrap();
        let mut v: Vec<(&String, &(String, Vec<String>))> = g.by_reference.iter().collect();
        v.sort_by_key(|(_, (id, _))| id.clone());
        v.into_iter().map(|(_, (_, p))| p.clone()).collect()
    }

    pub fn drop_next_reply(&self) {
        self.inner.lock().unwrap().drop_next_reply = true;
    }

    /// Fills the in-progress budget with one invalidation of `n` paths that never completes.
    pub fn occupy(&self, n: usize) {
        let mut g = self.inner.lock().unwrap();
        g.invalidations
            .insert("OCCUPIED".into(), ((0..n).map(|i| format!("/x{i}")).collect(), 0));
    }

    pub fn release(&self) {
        self.inner.lock().unwrap().invalidations.remove("OCCUPIED");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    m.update(data.as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// Whether the request carries a valid SigV4 signature for us-east-1/cloudfront with our key.
fn signature_ok(method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> bool {
    let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(rest) = auth.strip_prefix("AWS4-HMAC-SHA256 ") else {
        return false;
    };
    let field = |name: &str| {
        rest.split(", ")
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .unwrap_or_default()
            .to_string()
    };
    let (credential, signed, signature) = (field("Credential"), field("SignedHeaders"), field("Signature"));
    let parts: Vec<&str> = credential.split('/').collect();
    if parts.len() != 5
        || parts[0] != ACCESS_KEY
        || parts[2] != "us-east-1"
        || parts[3] != "cloudfront"
        || parts[4] != "aws4_request"
    {
        return false;
    }
    let date = parts[1];
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !amz_date.starts_with(date) {
        return false;
    }
    let canonical_headers: String = signed
        .split(';')
        .map(|h| {
            let v = headers.get(h).and_then(|v| v.to_str().ok()).unwrap_or_default();
            format!("{h}:{}\n", v.trim())
        })
        .collect();
    let canonical = format!(
        "{method}\n{}\n{}\n{canonical_headers}\n{signed}\n{}",
        uri.path(),
        uri.query().unwrap_or_default(),
        hex(&Sha256::digest(body))
    );
    let scope = format!("{date}/us-east-1/cloudfront/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(format!("AWS4{SECRET_KEY}").as_bytes(), date);
    for part in ["us-east-1", "cloudfront", "aws4_request"] {
        key = hmac(&key, part);
    }
    hex(&hmac(&key, &to_sign)) == signature
}

fn xml_error(status: u16, code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\"?><ErrorResponse xmlns=\"http://cloudfront.amazonaws.com/doc/2020-05-31/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>req-1</RequestId></ErrorResponse>"
    );
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "text/xml")],
        body,
    )
        .into_response()
}

fn tag<'a>(xml: &'a str, t: &str) -> Vec<&'a str> {
    let open = format!("<{t}>");
    let close = format!("</{t}>");
    xml.split(&open)
        .skip(1)
        .filter_map(|s| s.split(&close).next())
        .collect()
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut g = inner.lock().unwrap();
    if !signature_ok(&method, &uri, &headers, &body) {
        g.bad_signatures += 1;
        return xml_error(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        );
    }
    let base = format!("/2020-05-31/distribution/{DISTRIBUTION}");
    let path = uri.path().to_string();
    if method == Method::GET && path == base {
        return (StatusCode::OK, format!("<Distribution><Id>{DISTRIBUTION}</Id><DomainName>d111111abcdef8.cloudfront.net</DomainName></Distribution>")).into_response();
    }
    if method == Method::GET
        && let Some(id) = path.strip_prefix(&format!("{base}/invalidation/"))
    {
        let Some(entry) = g.invalidations.get_mut(id) else {
            return xml_error(404, "NoSuchInvalidation", "The specified invalidation does not exist.");
        };
        entry.1 += 1;
        let status = if entry.1 > 1 { "Completed" } else { "InProgress" };
        return (
            StatusCode::OK,
            format!("<Invalidation><Id>{id}</Id><Status>{status}</Status></Invalidation>"),
        )
            .into_response();
    }
    if method == Method::POST && path == format!("{base}/invalidation") {
        g.posts += 1;
        let text = String::from_utf8_lossy(&body).into_owned();
        let paths: Vec<String> = tag(&text, "Path").into_iter().map(str::to_string).collect();
        let quantity: usize = tag(&text, "Quantity").first().and_then(|q| q.parse().ok()).unwrap_or(0);
        let reference = tag(&text, "CallerReference")
            .first()
            .map(|s| s.to_string())
            .unwrap_or_default();
        if quantity != paths.len() || paths.is_empty() || reference.is_empty() {
            return xml_error(400, "MalformedInput", "Quantity, Items or CallerReference");
        }
        if let Some((id, before)) = g.by_reference.get(&reference).cloned() {
            if before == paths {
                return (
                    StatusCode::CREATED,
                    format!("<Invalidation><Id>{id}</Id><Status>InProgress</Status></Invalidation>"),
                )
                    .into_response();
            }
            return xml_error(
                409,
                "InvalidationBatchAlreadyExists",
                "CallerReference already used for another batch",
            );
        }
        let in_progress: usize = g
            .invalidations
            .values()
            .filter(|(_, asked)| *asked < 2)
            .map(|(p, _)| p.len())
            .sum();
        if in_progress + paths.len() > MAX_IN_PROGRESS {
            return xml_error(
                400,
                "TooManyInvalidationsInProgress",
                "Your request contains too many invalidations.",
            );
        }
        g.created += 1;
        let id = format!("I{:05}", g.created);
        g.by_reference.insert(reference, (id.clone(), paths.clone()));
        g.invalidations.insert(id.clone(), (paths, 0));
        if std::mem::take(&mut g.drop_next_reply) {
            return xml_error(503, "ServiceUnavailable", "the reply was lost");
        }
        return (
            StatusCode::CREATED,
            [("location", format!("{base}/invalidation/{id}"))],
            format!("<Invalidation><Id>{id}</Id><Status>InProgress</Status></Invalidation>"),
        )
            .into_response();
    }
    xml_error(404, "NotFound", "no such endpoint in the fake")
}

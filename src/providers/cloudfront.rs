//! CloudFront: `POST {api_url}/2020-05-31/distribution/{id}/invalidation`, signed with AWS
//! Signature Version 4 (region `us-east-1`, service `cloudfront`) by the AWS SDK's own signer
//! (`aws-sigv4`), with an `InvalidationBatch` of URL paths: a widened directory as `/blog/*`,
//! everything as `/*`, at most `max_paths` per invalidation (more become wildcards of their
//! directories, then `/*`: AWS bills each path, a wildcard counting as one). The
//! `CallerReference` is the same on every retry of a batch (a retry after a lost reply finds the
//! invalidation already made instead of making a second), and new for the next batch. The
//! invalidation is followed (`GET …/invalidation/{Id}`) until `Completed`.
//! `TooManyInvalidationsInProgress` and throttling are retried; `check --remote`:
//! `GET {api_url}/2020-05-31/distribution/{id}`.
//! Relied on: the CloudFront API reference (CreateInvalidation, GetInvalidation,
//! GetDistribution; the 2020-05-31 XML namespace; errors as `<ErrorResponse><Error><Code>`),
//! and AWS's SigV4 documentation for the signing scope.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::SystemTime;

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;

use super::{Accepted, JobState, ProviderError, Reason, Reply, send};
use super::{Keys, Shape, TargetKind};
use super::{Kind, Provider, TargetType, urls_of};
use crate::request::Request;
use crate::secret::Secret;

/// A CloudFront distribution.
#[derive(Debug, Clone)]
pub struct CloudFront {
    pub api_url: String,
    pub distribution_id: String,
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
    /// Paths per invalidation; more become wildcards, then `/*`.
    pub max_paths: usize,
    /// Free invalidation paths a month, for the cost `plan` shows.
    pub free_paths_per_month: u64,
}

const API: &str = "2020-05-31";
/// The price of a path past the month's free ones, in dollars.
pub(crate) const DOLLARS_PER_PATH: f64 = 0.005;

/// CallerReferences given to the batches sent and not yet accepted: a retry of the same batch
/// takes the same one.
#[derive(Debug, Default)]
pub(crate) struct References(Mutex<BTreeMap<String, String>>);

/// At most `max` paths covering `paths`: as they are while they fit; else each directory with
/// more than one changed path becomes `dir/*` (deepest first) until they fit; else `/*`.
pub(crate) fn fit(paths: &[String], max: usize) -> Vec<String> {
    let mut set: BTreeSet<String> = paths.iter().cloned().collect();
    if set.len() <= max.max(1) {
        return set.into_iter().collect();
    }
    loop {
        // The directory (of a path or a wildcard) holding the most entries, deepest first on a tie.
        let mut by_dir: BTreeMap<String, usize> = BTreeMap::new();
        for p in &set {
            let base = p.strip_suffix("/*").unwrap_or(p);
            if let Some(i) = base.rfind('/')
                && i > 0
            {
                *by_dir.entry(base[..=i].to_string()).or_default() += 1;
            }
        }
        let best = by_dir
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .max_by_key(|(d, n)| (*n, d.matches('/').count()));
        let Some((dir, _)) = best else {
            return vec!["/*".into()];
        };
        set.retain(|p| !p.starts_with(&dir));
        set.insert(format!("{dir}*"));
        if set.len() <= max.max(1) {
            return set.into_iter().collect();
        }
    }
}

/// The InvalidationBatch body.
pub(crate) fn batch_xml(paths: &[String], reference: &str) -> String {
    let items: String = paths
        .iter()
        .map(|p| format!("<Path>{}</Path>", xml_escape(p)))
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><InvalidationBatch xmlns=\"http://cloudfront.amazonaws.com/doc/{API}/\"><Paths><Quantity>{}</Quantity><Items>{items}</Items></Paths><CallerReference>{}</CallerReference></InvalidationBatch>",
        paths.len(),
        xml_escape(reference)
    )
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The text of the first `<tag>` in `xml`.
fn tag<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(&xml[start..end])
}

/// The paths of a request (URL paths, percent-encoded as CloudFront wants them; `*` kept).
fn paths_of(urls: &[String], everything: bool) -> Vec<String> {
    if everything {
        return vec!["/*".into()];
    }
    urls.iter()
        .map(|u| match u.strip_suffix('*') {
            Some(dir) => format!("{}*", percent_encoding::utf8_percent_encode(dir, crate::escape::PATH)),
            None => percent_encoding::utf8_percent_encode(u, crate::escape::PATH).to_string(),
        })
        .collect()
}

/// The paths `urls` become for `c`: what `plan` and `--dry-run` count.
pub(crate) fn planned_paths(c: &CloudFront, urls: &[String], everything: bool) -> Vec<String> {
    fit(&paths_of(urls, everything), c.max_paths)
}

/// The paths a recorded request invalidated (its description says "N paths"), 0 for another.
pub(crate) fn paths_in(request: &str) -> u64 {
    let Some(i) = request.find(" path") else { return 0 };
    request[..i]
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// What a batch of `n` paths costs, with `used` paths invalidated this month already: the month's
/// free paths first, then $0.005 a path.
pub(crate) fn cost_line(c: &CloudFront, used: u64, n: u64) -> String {
    let billed = (used + n).saturating_sub(c.free_paths_per_month.max(used));
    format!(
        "{n} path{} this batch; {used} of the {} free paths used this month; cost ${:.3}",
        if n == 1 { "" } else { "s" },
        c.free_paths_per_month,
        billed as f64 * DOLLARS_PER_PATH
    )
}

/// The request, signed: `(url, headers)`.
fn signed(
    c: &CloudFront,
    method: &str,
    url: &str,
    body: &str,
    time: SystemTime,
) -> Result<Vec<(String, String)>, ProviderError> {
    let identity = aws_credential_types::Credentials::new(
        c.access_key_id.expose(),
        c.secret_access_key.expose(),
        c.session_token.as_ref().map(|t| t.expose().to_string()),
        None,
        "purgewatch",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("cloudfront")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| ProviderError::permanent(format!("cloudfront: cannot sign: {e}")))?
        .into();
    let mut headers = vec![("content-type".to_string(), "application/xml".to_string())];
    let signable = SignableRequest::new(
        method,
        url,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body.as_bytes()),
    )
    .map_err(|e| ProviderError::permanent(format!("cloudfront: cannot sign {url}: {e}")))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| ProviderError::permanent(format!("cloudfront: cannot sign {url}: {e}")))?
        .into_parts();
    for (k, v) in instructions.headers() {
        headers.push((k.to_string(), v.to_string()));
    }
    Ok(headers)
}

fn send_signed(
    http: &reqwest::Client,
    c: &CloudFront,
    method: reqwest::Method,
    url: &str,
    body: String,
) -> Result<reqwest::RequestBuilder, ProviderError> {
    let headers = signed(c, method.as_str(), url, &body, SystemTime::now())?;
    let mut rb = http.request(method, url).body(body);
    for (k, v) in headers {
        rb = rb.header(k, v);
    }
    Ok(rb)
}

/// An error reply: `<Code>` and `<Message>`; throttling and too many invalidations in progress
/// are retried.
fn failure(what: &str, reply: &Reply) -> ProviderError {
    let code = tag(&reply.excerpt, "Code").unwrap_or_default().to_string();
    let msg = tag(&reply.excerpt, "Message").unwrap_or_default();
    let said = if code.is_empty() {
        format!(": {}", reply.excerpt)
    } else {
        format!(": {code}: {msg}")
    };
    let message = format!("{what}: HTTP {}{said}", reply.status);
    let s = reply.status.as_u16();
    let retry = matches!(
        code.as_str(),
        "TooManyInvalidationsInProgress" | "Throttling" | "ThrottlingException" | "RequestLimitExceeded"
    ) || s == 429
        || reply.status.is_server_error();
    if retry {
        ProviderError::Transient {
            message,
            retry_after: reply.retry_after,
            reason: if s == 429 || code.starts_with("Throttl") {
                Reason::TooMany
            } else {
                Reason::ServerError
            },
            cause: None,
        }
    } else {
        ProviderError::permanent(message)
    }
}

pub(crate) async fn purge(
    http: &reqwest::Client,
    c: &CloudFront,
    refs: &References,
    urls: &[String],
    everything: bool,
) -> Result<Accepted, ProviderError> {
    let paths = planned_paths(c, urls, everything);
    let key = paths.join("\n");
    let reference = {
        let mut r = refs.0.lock().unwrap_or_else(|e| e.into_inner());
        r.entry(key.clone())
            .or_insert_with(|| {
                let h = blake3::hash(key.as_bytes()).to_hex();
                format!("purgewatch-{}-{}", &h[..16], crate::clock::now_ms())
            })
            .clone()
    };
    let url = format!("{}/{API}/distribution/{}/invalidation", c.api_url, c.distribution_id);
    let what = format!("POST {url} ({} paths, {reference})", paths.len());
    let rb = send_signed(http, c, reqwest::Method::POST, &url, batch_xml(&paths, &reference))?;
    let reply = send(rb, &what, &c.secret_access_key).await?;
    if !reply.status.is_success() {
        return Err(failure(&what, &reply));
    }
    refs.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
    let id = tag(&reply.excerpt, "Id").map(str::to_string);
    Ok(Accepted {
        message: format!(
            "invalidation of {} paths {}",
            paths.len(),
            tag(&reply.excerpt, "Status").unwrap_or("accepted")
        ),
        job_id: id,
    })
}

pub(crate) async fn job(http: &reqwest::Client, c: &CloudFront, id: &str) -> Result<JobState, ProviderError> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ProviderError::permanent(format!(
            "cloudfront: the invalidation id {id:?} is not a plain id: not followed"
        )));
    }
    let url = format!(
        "{}/{API}/distribution/{}/invalidation/{id}",
        c.api_url, c.distribution_id
    );
    let what = format!("GET {url}");
    let rb = send_signed(http, c, reqwest::Method::GET, &url, String::new())?;
    let reply = send(rb, &what, &c.secret_access_key).await?;
    if !reply.status.is_success() {
        return Err(failure(&what, &reply));
    }
    Ok(match tag(&reply.excerpt, "Status") {
        Some("Completed") => JobState::Done("Completed".into()),
        Some(s) => JobState::Running(s.to_string()),
        None => JobState::Running("unknown".into()),
    })
}

pub(crate) async fn check(http: &reqwest::Client, c: &CloudFront) -> Result<String, ProviderError> {
    let url = format!("{}/{API}/distribution/{}", c.api_url, c.distribution_id);
    let what = format!("GET {url}");
    let rb = send_signed(http, c, reqwest::Method::GET, &url, String::new())?;
    let reply = send(rb, &what, &c.secret_access_key).await?;
    if !reply.status.is_success() {
        return Err(failure(&what, &reply));
    }
    Ok(format!(
        "distribution {} ({})",
        c.distribution_id,
        tag(&reply.excerpt, "DomainName").unwrap_or("found")
    ))
}

pub(crate) const TYPE: TargetType = TargetType {
    name: "cloudfront",
    keys: &[
        "distribution_id",
        "access_key_id",
        "access_key_id_file",
        "secret_access_key",
        "secret_access_key_file",
        "session_token",
        "session_token_file",
        "api_url",
        "max_paths",
        "free_paths_per_month",
    ],
    read,
};

fn read(k: &mut dyn Keys) -> TargetKind {
    let api_url = k.api_url("https://cloudfront.amazonaws.com");
    // A key from the rules, else from the standard AWS variables.
    let access_key_id = k
        .secret_or_env("access_key_id", "AWS_ACCESS_KEY_ID", true)
        .unwrap_or_default();
    let secret_access_key = k
        .secret_or_env("secret_access_key", "AWS_SECRET_ACCESS_KEY", true)
        .unwrap_or_default();
    let session_token = k.secret_or_env("session_token", "AWS_SESSION_TOKEN", false);
    let distribution_id = k.id(
        "distribution_id",
        "the distribution id, like EDFDVBD6EXAMPLE",
        b"",
        "a distribution id (letters and digits)",
    );
    let max_paths = match k.number::<usize>("max_paths", "a number of paths") {
        Some(n) if (1..=3000).contains(&n) => n,
        Some(_) => {
            k.error("max_paths", "must be 1 to 3000 (CloudFront's limit in progress)");
            100
        }
        None => 100,
    };
    let free_paths_per_month = k
        .number::<u64>("free_paths_per_month", "a number of paths")
        .unwrap_or(1000);
    TargetKind::CloudFront(CloudFront {
        api_url,
        distribution_id,
        access_key_id,
        secret_access_key,
        session_token,
        max_paths,
        free_paths_per_month,
    })
}

impl Kind for CloudFront {
    fn type_name(&self) -> &'static str {
        TYPE.name
    }

    fn api(&self) -> (&str, &Secret) {
        (&self.api_url, &self.secret_access_key)
    }

    fn secrets(&self) -> Vec<&Secret> {
        [
            Some(&self.secret_access_key),
            Some(&self.access_key_id),
            self.session_token.as_ref(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// One invalidation per batch: its paths are fitted to `max_paths` here.
    fn shape(&self) -> Shape {
        Shape::Urls {
            max: usize::MAX,
            absolute: false,
            everything: true,
            prefixes: true,
        }
    }

    fn describe(&self, req: &Request) -> String {
        let (urls, everything, _) = urls_of(req);
        if !matches!(req, Request::Urls { .. }) {
            return format!("invalidate distribution {}: /*", self.distribution_id);
        }
        let paths = planned_paths(self, urls, everything);
        let shown: Vec<&str> = paths.iter().take(5).map(String::as_str).collect();
        format!(
            "invalidate distribution {}: {} path{} ({}{})",
            self.distribution_id,
            paths.len(),
            if paths.len() == 1 { "" } else { "s" },
            shown.join(" "),
            if paths.len() > 5 { " …" } else { "" },
        )
    }

    /// Past `free_paths_per_month` paths in the calendar month (what the state directory
    /// recorded), each path at [`DOLLARS_PER_PATH`].
    fn cost(&self, p: &Provider, req: &Request, store: Option<&crate::state::Store>) -> Option<String> {
        let Request::Urls { urls, everything, .. } = req else {
            return None;
        };
        let since = crate::clock::month_start_ms(crate::clock::now_ms());
        let used: u64 = store
            .and_then(|s| s.accepted_since(&p.target, since).ok())
            .unwrap_or_default()
            .iter()
            .map(|r| paths_in(r))
            .sum();
        let n = planned_paths(self, urls, *everything).len() as u64;
        Some(cost_line(self, used, n))
    }

    async fn purge(&self, p: &Provider, req: &Request) -> Result<Accepted, ProviderError> {
        let (urls, everything, _) = urls_of(req);
        purge(&p.http, self, &p.cloudfront, urls, everything).await
    }

    async fn job(&self, p: &Provider, id: &str) -> Result<JobState, ProviderError> {
        job(&p.http, self, id).await
    }

    async fn check(&self, p: &Provider) -> Result<String, ProviderError> {
        check(&p.http, self).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_past_the_maximum_become_wildcards_then_everything() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(fit(&p(&["/a.html", "/b/c.html"]), 5), p(&["/a.html", "/b/c.html"]));
        assert_eq!(
            fit(&p(&["/a.html", "/b/1.html", "/b/2.html", "/b/3.html"]), 2),
            p(&["/a.html", "/b/*"])
        );
        assert_eq!(fit(&p(&["/a.html", "/b.html", "/c.html"]), 2), p(&["/*"]));
        let xml = batch_xml(&p(&["/a&b.html"]), "ref-1");
        assert!(
            xml.contains("<Quantity>1</Quantity><Items><Path>/a&amp;b.html</Path></Items>"),
            "{xml}"
        );
        assert!(xml.contains("<CallerReference>ref-1</CallerReference>"));
    }

    /// AWS's published SigV4 example ("get-vanilla" of the SigV4 test suite, service `service`):
    /// the signer gives the documented signature. The same signer, with service `cloudfront`,
    /// signs every request.
    #[test]
    fn the_signer_matches_the_published_test_vector() {
        let identity = aws_credential_types::Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "test",
        )
        .into();
        let time = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_440_938_160); // 20150830T123600Z
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("service")
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let req = SignableRequest::new(
            "GET",
            "https://example.amazonaws.com/",
            [("host", "example.amazonaws.com")].into_iter(),
            SignableBody::Bytes(b""),
        )
        .unwrap();
        let (_, signature) = sign(req, &params).unwrap().into_parts();
        assert_eq!(
            signature,
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }
}

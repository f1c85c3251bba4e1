//! Proving a purge worked: what the edge serves for a batch's URLs, compared with the bytes the
//! manifest recorded, and re-purges of what is still stale. Also warming the edge.
//!
//! A provider answering "purge accepted", or even "task SUCCESS", does not prove that visitors
//! get the new bytes. purgewatch knows each file's BLAKE3, so after a purge's job has ended (and
//! `verify.after` more), it GETs a sample of the batch's URLs through `verify.base_url` — with no
//! cache-busting headers, at most [`CONCURRENCY`] at a time, paced at the target's `rate_limit` —
//! and compares: a changed file is
//! fresh when the (decoded) body hashes to the recorded bytes, a deleted one when the edge answers
//! 404 or 410. Stale URLs are purged again through the same planner, up to `verify.repurge`
//! times; still stale is an error. With `check: status` only the status code is compared (for an
//! origin that rewrites HTML on the fly).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::config::{Rule, Target, Verify, VerifyCheck};
use crate::deliver::{self, JobOutcome, Pacer};
use crate::manifest::Manifest;
use crate::plan;
use crate::providers::Provider;
use crate::request::ChangeKind;
use crate::request::{PendingFile, Request};

/// Edge requests in flight at once, at most.
pub(crate) const CONCURRENCY: usize = 4;
/// How long a re-purge's job is followed.
const JOB_FOLLOW: Duration = Duration::from_secs(600);

/// What a URL should serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Want {
    /// These bytes (their [`crate::hashing::Digest`]).
    Bytes(crate::hashing::Digest),
    /// 404 or 410: the file was deleted.
    Gone,
}

/// One URL to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Expect {
    /// The file, relative to the rule's root.
    pub path: String,
    /// The URL path fetched (an index file by its directory URL).
    pub url: String,
    pub want: Want,
}

/// How one URL turned out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Fresh,
    /// The edge serves something else; what it served, for the log.
    Stale(String),
    /// The edge could not be asked (down, timed out).
    Unreachable(String),
}

/// The URL a file is checked at: an index file by its directory URL (`/blog/`), as visitors ask
/// for it; any other file by its own.
pub(crate) fn check_url(rule: &Rule, rel: &str) -> String {
    let urls = plan::urls_for(rule, rel);
    if urls.len() > 1 {
        urls[1].clone()
    } else {
        urls[0].clone()
    }
}

/// At most `n` of `items` (each with its path), taken in turn from each directory so that one
/// big directory does not fill the sample.
pub(crate) fn spread<T>(items: Vec<(String, T)>, n: usize) -> Vec<T> {
    let mut by_dir: BTreeMap<String, std::collections::VecDeque<T>> = BTreeMap::new();
    for (path, item) in items {
        let dir = path.rsplit_once('/').map_or("", |(d, _)| d).to_string();
        by_dir.entry(dir).or_default().push_back(item);
    }
    let mut queues: Vec<_> = by_dir.into_values().collect();
    let mut out = Vec::new();
    while out.len() < n && !queues.is_empty() {
        queues.retain_mut(|q| match q.pop_front() {
            Some(e) if out.len() < n => {
                out.push(e);
                true
            }
            _ => false,
        });
    }
    out
}

/// The sample of a batch to check: changed and new files first, then deleted ones, spread
/// across directories.
pub(crate) fn sample(rule: &Rule, files: &[PendingFile], manifest: &Manifest, n: usize) -> Vec<Expect> {
    let (mut present, mut deleted) = (Vec::new(), Vec::new());
    for f in files.iter().filter(|f| f.rule == rule.name) {
        let want = match f.kind {
            ChangeKind::Deleted => Want::Gone,
            _ => match manifest.get(&f.path) {
                Some(meta) => Want::Bytes(meta.hash),
                None => continue,
            },
        };
        let e = Expect {
            path: f.path.clone(),
            url: check_url(rule, &f.path),
            want,
        };
        let list = if e.want == Want::Gone {
            &mut deleted
        } else {
            &mut present
        };
        list.push((f.path.clone(), e));
    }
    let mut out = spread(present, n);
    out.extend(spread(deleted, n - out.len()));
    out
}

/// The HTTP client for the edge: follows redirects (`/blog` → `/blog/`), decodes gzip, sends
/// no cache-busting headers.
pub(crate) fn edge_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .user_agent(concat!("purgewatch/", env!("CARGO_PKG_VERSION"), " (verify)"))
        .build()
        .unwrap_or_default()
}

/// Headers that say where an answer came from.
const CACHE_HEADERS: &[&str] = &["age", "x-cache", "cf-cache-status", "x-cache-status", "x-served-by"];

/// `base_url` + the URL path `path`, encoded as a web server expects a path: `?`, `#`, `%`,
/// spaces, quotes and anything not ASCII percent-encoded (a file `q?x.html` is fetched as
/// `/q%3Fx.html`, not as `/q` with a query).
pub(crate) fn edge_url(base_url: &str, path: &str) -> String {
    format!(
        "{base_url}{}",
        percent_encoding::utf8_percent_encode(path, crate::escape::PATH)
    )
}

/// How much of a warmed URL's body is read (and thrown away), at most: enough for the edge to
/// have fetched it, without holding it.
pub(crate) const WARM_READ_LIMIT: u64 = 64 * 1024 * 1024;

/// GETs `base_url` + `e.url` and compares.
pub(crate) async fn check(http: &reqwest::Client, base_url: &str, e: &Expect, mode: VerifyCheck) -> Verdict {
    let url = edge_url(base_url, &e.url);
    let mut resp = match http.get(&url).send().await {
        Ok(r) => r,
        Err(err) => return Verdict::Unreachable(format!("GET {url}: {}", err.without_url())),
    };
    let status = resp.status();
    let cache: Vec<String> = CACHE_HEADERS
        .iter()
        .filter_map(|h| {
            let v = resp.headers().get(*h)?.to_str().ok()?;
            Some(format!("{h}: {v}"))
        })
        .collect();
    let cache = if cache.is_empty() {
        String::new()
    } else {
        format!(" ({})", cache.join(", "))
    };
    let gone = status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE;
    match (&e.want, mode) {
        (Want::Gone, _) if gone => Verdict::Fresh,
        (Want::Gone, _) => Verdict::Stale(format!("HTTP {status} for a deleted file{cache}")),
        (Want::Bytes(_), VerifyCheck::Status) if status.is_success() => Verdict::Fresh,
        (Want::Bytes(_), _) if !status.is_success() => Verdict::Stale(format!("HTTP {status}{cache}")),
        (Want::Bytes(want), VerifyCheck::Content) => {
            let mut hasher = blake3::Hasher::new();
            loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) => {
                        hasher.update(&chunk);
                    }
                    Ok(None) => break,
                    Err(err) => return Verdict::Unreachable(format!("GET {url}: reading: {}", err.without_url())),
                }
            }
            let got = crate::hashing::digest(&hasher);
            if got == *want {
                Verdict::Fresh
            } else {
                Verdict::Stale(format!("serves {} where {} is expected{cache}", hex6(&got), hex6(want)))
            }
        }
        (Want::Bytes(_), VerifyCheck::Status) => Verdict::Stale(format!("HTTP {status}{cache}")),
    }
}

/// Reads `resp`'s body chunk by chunk, keeping none of it, up to `limit` bytes; true when the
/// body was read to its end or to the limit.
async fn drain(mut resp: reqwest::Response, limit: u64) -> bool {
    let mut read = 0u64;
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                read += chunk.len() as u64;
                if read >= limit {
                    return true;
                }
            }
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}

/// Requests to the edge paced like the target's own: at most `rate` a second (shared by every
/// check and warm of that `base_url`).
#[derive(Clone)]
pub(crate) struct Pace {
    pub pacer: Arc<Pacer>,
    pub rate: f64,
}

impl Pace {
    async fn wait(pace: &Option<Pace>, base_url: &str) {
        if let Some(p) = pace {
            p.pacer.wait(&format!("edge {base_url}"), p.rate).await;
        }
    }
}

/// Checks every expectation, at most [`CONCURRENCY`] at a time (and `pace`d), in order.
pub(crate) async fn check_all(
    http: &reqwest::Client,
    base_url: &str,
    expects: &[Expect],
    mode: VerifyCheck,
    pace: Option<Pace>,
) -> Vec<(Expect, Verdict)> {
    let mut set = JoinSet::new();
    let mut out: Vec<Option<(Expect, Verdict)>> = vec![None; expects.len()];
    let mut next = 0;
    loop {
        while set.len() < CONCURRENCY && next < expects.len() {
            let (http, base, e, i) = (http.clone(), base_url.to_string(), expects[next].clone(), next);
            let pace = pace.clone();
            set.spawn(async move {
                Pace::wait(&pace, &base).await;
                let v = check(&http, &base, &e, mode).await;
                (i, e, v)
            });
            next += 1;
        }
        match set.join_next().await {
            Some(Ok((i, e, v))) => out[i] = Some((e, v)),
            Some(Err(_)) => {}
            None => break,
        }
    }
    out.into_iter().flatten().collect()
}

/// GETs up to `limit` URLs through `base_url` so that the edge fetches the new bytes before
/// visitors ask; returns how many answered 2xx.
pub(crate) async fn warm(
    http: &reqwest::Client,
    base_url: &str,
    urls: &[String],
    limit: usize,
    pace: Option<Pace>,
) -> usize {
    let mut set = JoinSet::new();
    let mut ok = 0;
    let mut urls = urls.iter().take(limit);
    loop {
        while set.len() < CONCURRENCY {
            let Some(u) = urls.next() else { break };
            let (http, url, base, pace) = (http.clone(), edge_url(base_url, u), base_url.to_string(), pace.clone());
            set.spawn(async move {
                Pace::wait(&pace, &base).await;
                match http.get(&url).send().await {
                    Ok(r) if r.status().is_success() => drain(r, WARM_READ_LIMIT).await,
                    _ => false,
                }
            });
        }
        match set.join_next().await {
            Some(Ok(true)) => ok += 1,
            Some(_) => {}
            None => break,
        }
    }
    ok
}

/// Everything a verification of one rule's purged files needs, owned, so that it runs on a
/// task of its own and never holds up the daemon. A stale URL is purged again through every
/// target of the rule: the public URL is served through all of them.
pub(crate) struct Job {
    pub targets: Vec<(Target, Arc<Provider>)>,
    pub rule: Rule,
    pub verify: Verify,
    pub expects: Vec<Expect>,
    pub pacer: Arc<Pacer>,
    pub http: reqwest::Client,
}

/// How a verification ended.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    /// The rule's targets.
    pub targets: Vec<String>,
    pub rule: String,
    pub checked: usize,
    pub fresh: usize,
    /// URLs still stale after every re-purge, with what the edge served.
    pub stale: Vec<(String, String)>,
    /// URLs the edge did not answer for.
    pub unreachable: Vec<(String, String)>,
    pub repurges: u32,
}

/// The requests that purge `expects` again through `target` (every URL of each file, exactly:
/// no widening; on the rule's host when its `base_url` names one).
fn repurge_requests(target: &Target, rule: &Rule, expects: &[Expect]) -> Vec<Request> {
    let mut urls: Vec<String> = expects.iter().flat_map(|e| plan::urls_for(rule, &e.path)).collect();
    urls.sort();
    urls.dedup();
    plan::exact(target, &urls, rule.host(), rule.base_url.as_deref())
}

/// Purges `todo` again through every target of the rule, each request's job followed to its
/// end (so that the next check sees what the purge did).
async fn repurge(job: &Job, todo: &[Expect]) {
    for (target, provider) in &job.targets {
        for req in repurge_requests(target, &job.rule, todo) {
            let res = deliver::send(provider, &job.pacer, &target.retry, target.rate_limit, &req).await;
            match res {
                Ok(acc) => {
                    if let Some(id) = acc.job_id {
                        let outcome =
                            deliver::follow_job(provider, &job.pacer, target.rate_limit, &id, JOB_FOLLOW).await;
                        if let JobOutcome::Failed(s) | JobOutcome::Unknown(s) = outcome {
                            tracing::warn!(target = %target.name, "the re-purge's job did not succeed: {s}");
                        }
                    }
                }
                Err(f) => tracing::warn!(target = %target.name, "the re-purge failed: {f}"),
            }
        }
    }
}

/// Waits `after`, checks, and re-purges what is stale (with backoff) until it is fresh or
/// `repurge` re-purges are spent.
pub(crate) async fn run(job: Job) -> Report {
    let Job { verify, .. } = &job;
    let mut report = Report {
        targets: job.targets.iter().map(|(t, _)| t.name.clone()).collect(),
        rule: job.rule.name.clone(),
        checked: job.expects.len(),
        fresh: 0,
        stale: vec![],
        unreachable: vec![],
        repurges: 0,
    };
    let mut todo = job.expects.clone();
    let mut round = 0;
    loop {
        tokio::time::sleep(verify.after).await;
        // Paced at the slowest of the targets' rates.
        let rate = job
            .targets
            .iter()
            .map(|(t, _)| t.rate_limit)
            .fold(f64::INFINITY, f64::min);
        let pace = job.targets.first().map(|_| Pace {
            pacer: job.pacer.clone(),
            rate,
        });
        let results = check_all(&job.http, &verify.base_url, &todo, verify.check, pace).await;
        let mut stale = Vec::new();
        for (e, v) in results {
            match v {
                Verdict::Fresh => report.fresh += 1,
                Verdict::Stale(why) => stale.push((e, why)),
                Verdict::Unreachable(why) => report.unreachable.push((e.url, why)),
            }
        }
        if stale.is_empty() {
            return report;
        }
        if round >= verify.repurge {
            report.stale = stale
                .into_iter()
                .map(|(e, why)| (edge_url(&verify.base_url, &e.url), why))
                .collect();
            return report;
        }
        round += 1;
        report.repurges = round;
        for (e, why) in &stale {
            tracing::warn!(
                rule = %job.rule.name,
                "stale after the purge: {}{} {why}; purging it again through every target of the rule ({round} of {})",
                verify.base_url,
                e.url,
                verify.repurge
            );
        }
        let retry = job.targets.first().map(|(t, _)| t.retry.clone());
        if let Some(retry) = retry {
            tokio::time::sleep(deliver::backoff(&retry, round, None)).await;
        }
        todo = stale.into_iter().map(|(e, _)| e).collect();
        repurge(&job, &todo).await;
    }
}

/// The first 6 bytes of a digest in hex: enough to tell two versions apart in a message.
fn hex6(d: &crate::hashing::Digest) -> String {
    d[..6].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::FileMeta;

    fn rule() -> Rule {
        Rule::new("site", "/w")
    }

    fn file(path: &str, kind: ChangeKind) -> PendingFile {
        PendingFile {
            rule: "site".into(),
            path: path.into(),
            kind,
        }
    }

    #[test]
    fn the_sample_takes_changed_files_first_spread_across_directories() {
        let meta = FileMeta {
            size: 1,
            mtime_ns: 1,
            hash: [7; 16],
        };
        let paths = ["a/1.html", "a/2.html", "a/3.html", "b/index.html", "c/1.html"];
        let m = Manifest::from_entries(paths.iter().map(|p| (p.to_string(), meta)));
        let mut files: Vec<PendingFile> = paths.iter().map(|p| file(p, ChangeKind::Modified)).collect();
        files.insert(0, file("gone.html", ChangeKind::Deleted));
        let s = sample(&rule(), &files, &m, 4);
        let urls: Vec<&str> = s.iter().map(|e| e.url.as_str()).collect();
        assert_eq!(urls, vec!["/a/1.html", "/b/", "/c/1.html", "/a/2.html"]);
        assert!(s.iter().all(|e| e.want == Want::Bytes([7; 16])));
        let all = sample(&rule(), &files, &m, 100);
        assert_eq!(all.len(), 6);
        assert_eq!(all.last().unwrap().want, Want::Gone);
    }
}

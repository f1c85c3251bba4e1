//! nginx with ngx_cache_purge (Debian's `libnginx-mod-http-cache-purge`): one
//! `GET {endpoint}{purge_location}{URL path}` per URL; 200 (purged) and 404 (was not cached) are
//! success. The module cannot purge by prefix or everything at once: a widened directory is its
//! URLs, and everything is every URL of the rule's tree (listed by the planner). The shipped
//! `examples/nginx/purgewatch.conf` is what the tests run in a real nginx.

use super::cache::{CACHE_URLS_PER_REQUEST, each};
use super::{Accepted, Kind, Provider, ProviderError, TargetType, url_list, urls_of};
use super::{Keys, NO_SECRET, Shape, TargetKind};
use crate::request::Request;
use crate::secret::Secret;

/// One nginx cache with ngx_cache_purge.
#[derive(Debug, Clone)]
pub struct Nginx {
    pub endpoint: String,
    /// `GET {endpoint}{purge_location}{URL path}`.
    pub purge_location: String,
    pub host: Option<String>,
}

pub(crate) const TYPE: TargetType = TargetType {
    name: "nginx",
    keys: &["endpoints", "purge_location", "host"],
    read,
};

fn read(k: &mut dyn Keys) -> TargetKind {
    let endpoint = k.endpoints();
    let host = k.string("host");
    let purge_location = match k.string("purge_location") {
        Some(p) if p.starts_with('/') => p.trim_end_matches('/').to_string(),
        Some(p) => {
            k.error("purge_location", format!("`{p}` must start with `/`, like /purge"));
            String::new()
        }
        None if k.has("purge_location") => String::new(),
        None => {
            k.error(
                "purge_location",
                "missing (the location ngx_cache_purge answers at, like /purge)",
            );
            String::new()
        }
    };
    TargetKind::Nginx(Nginx {
        endpoint,
        purge_location,
        host,
    })
}

pub(crate) async fn purge_urls(http: &reqwest::Client, n: &Nginx, paths: &[String]) -> Result<Accepted, ProviderError> {
    each(http, &n.endpoint, b"GET", &n.purge_location, &n.host, paths, true).await
}

impl Kind for Nginx {
    fn type_name(&self) -> &'static str {
        TYPE.name
    }

    fn api(&self) -> (&str, &Secret) {
        (&self.endpoint, &NO_SECRET)
    }

    fn shape(&self) -> Shape {
        Shape::Urls {
            max: CACHE_URLS_PER_REQUEST,
            absolute: false,
            everything: false,
            prefixes: false,
        }
    }

    fn endpoint_mut(&mut self) -> Option<&mut String> {
        Some(&mut self.endpoint)
    }

    fn describe(&self, req: &Request) -> String {
        let (urls, everything, _) = urls_of(req);
        format!(
            "GET {}{}…: {}",
            self.endpoint,
            self.purge_location,
            url_list(urls, everything)
        )
    }

    async fn purge(&self, p: &Provider, req: &Request) -> Result<Accepted, ProviderError> {
        let (urls, everything, _) = urls_of(req);
        if everything {
            return Err(ProviderError::permanent(format!(
                "nginx at {}: ngx_cache_purge cannot purge everything at once; purge the URLs (--url), or let the daemon list a rule's tree",
                self.endpoint
            )));
        }
        purge_urls(&p.http, self, urls).await
    }

    async fn check(&self, p: &Provider) -> Result<String, ProviderError> {
        super::cache::check(&p.http, &self.endpoint).await
    }
}

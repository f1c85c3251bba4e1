//! A target as the rules define it: its name, its batching and retry settings, and its type's
//! settings ([`TargetKind`], one variant per type in the list of `with_target_types!`), with
//! what the planner asks of it ([`Shape`]). The loader (`config`) builds it; each type's file
//! reads its own keys through [`Keys`].

use std::time::Duration;

use super::Kind;
use crate::secret::Secret;

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included.
    pub attempts: u32,
    pub backoff: Duration,
    pub backoff_max: Duration,
}

/// How the VIMS planner builds patterns.
#[derive(Debug, Clone, PartialEq)]
pub struct PatternSettings {
    /// Longest pattern sent in one call; longer sets are split across calls.
    pub max_bytes: usize,
    /// When at least this share of a directory's files changed, purge the whole directory.
    pub widen_threshold: f64,
    /// When at least this share of the rule's files changed, purge everything (`"*"`).
    pub all_threshold: f64,
}

#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub debounce: Duration,
    pub max_delay: Duration,
    pub retry: RetryPolicy,
    /// Requests per second allowed per provider account.
    pub rate_limit: f64,
    /// A command (program and arguments, no shell) run when a purge fails for good.
    pub on_failure: Option<Vec<String>>,
    pub kind: TargetKind,
}

/// The target kinds, one per type in the list of `with_target_types!` (src/lib.rs).
macro_rules! target_kind_enum {
    ([] $($variant:ident => $file:ident::$settings:ident,)*) => {
        /// A target's type and its settings.
        #[derive(Debug, Clone)]
        pub enum TargetKind {
            $($variant(super::$file::$settings),)*
        }
    };
}
with_target_types!(target_kind_enum);

/// What purges a target type takes: the planner asks this instead of the type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Only everything at once (a SiteHost stack).
    Whole,
    /// Regex patterns on the cache key, at most this long each.
    Patterns { max_bytes: usize },
    /// Lists of URLs, at most `max` per request; `absolute`: with the rule's `base_url` (else
    /// URL paths, for a cache that takes the host in a header); `everything`: it can also purge
    /// everything at once (else everything of a rule is every URL of its tree); `prefixes`: a
    /// widened directory or a rule's whole space may be one entry ending in `/*` (the URL
    /// prefix), else it is every URL of it.
    Urls {
        max: usize,
        absolute: bool,
        everything: bool,
        prefixes: bool,
    },
}

impl TargetKind {
    pub fn type_name(&self) -> &'static str {
        each_kind!(self, k => k.type_name())
    }

    /// Where requests go (what shares a rate limit) and the credential sent there.
    pub fn api(&self) -> (&str, &Secret) {
        each_kind!(self, k => k.api())
    }

    /// Every credential of the target.
    pub fn secrets(&self) -> Vec<&Secret> {
        each_kind!(self, k => k.secrets())
    }

    pub fn shape(&self) -> Shape {
        each_kind!(self, k => k.shape())
    }

    /// The target's own pattern settings (a VIMS target's tuning), if it has them.
    pub fn pattern_settings(&self) -> Option<PatternSettings> {
        each_kind!(self, k => k.pattern_settings())
    }

    /// It purges absolute URLs only: a rule feeding it needs `base_url`.
    pub fn needs_base_url(&self) -> bool {
        each_kind!(self, k => k.needs_base_url())
    }

    /// A fleet member's endpoint.
    pub fn endpoint_mut(&mut self) -> Option<&mut String> {
        each_kind!(self, k => k.endpoint_mut())
    }
}

/// An empty credential, for target types that send none.
pub(crate) static NO_SECRET: std::sync::LazyLock<Secret> = std::sync::LazyLock::new(Secret::default);

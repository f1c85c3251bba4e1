//! purgewatch: watch a static site's deploy directories and send each cache target the smallest
//! purge that covers what really changed.
//!
//! # Layout
//!
//! The daemon is a pipeline; each stage is one module, and `daemon` only wires them:
//!
//! ```text
//!  watch ─▶ route ─▶ batch ─▶ compare ─▶ plan ─▶ deliver ─▶ providers::{sitehost, vims, …}
//! (inotify)  (which    (debounce,  (record +   (URLs,    (retries,
//!            rule,     max_delay)  manifest →  patterns) pacing)
//!            keep?)      ▲         changes)
//!                        │            ▲
//!                   hashahead ────────┘  (hashes taken while the batch waits)
//! ```
//!
//! * `watch`: a `notify` watcher that feeds filesystem events into a channel; it also watches
//!   the parent of every watched directory (to see a `mv` or symlink-swap deploy) and the rules file.
//! * [`route`]: for an event's path and a rule: outside, the rule's own directory (a swap),
//!   unnamed, skip, or keep (with the path relative to the tree); include/exclude/match.
//! * [`batch`]: per-target debounce (`debounce` after the last change, at most `max_delay` after
//!   the first).
//! * `hashahead`: a worker thread hashes finished files (and swapped-in trees) during the
//!   debounce; each rule's `Record` keeps its dirty paths and what was found, as a `Known` per
//!   path (unknown, gone, or a file's hash), so that the comparison is mostly lookups.
//! * [`compare`]: a rule's record and [`manifest`] (what the tree looked like at the last purge:
//!   size, mtime, a 128-bit BLAKE3 digest, in one compact sorted table per rule) → what
//!   changed (`compare::diff`: which paths to look at, and each one's verdict); run on a blocking thread, at most two per core at once. A path is purged only
//!   when its content really changed. [`walk`] lists a tree (or a directory of it) and
//!   [`hashing`] reads a file's bytes, each until it is told to stop.
//! * [`plan`]: turns changed files into URLs and the fewest provider requests, by the shape of
//!   purge each target takes (`config::Shape`): the whole target (a SiteHost stack), regex
//!   patterns (VIMS, Varnish bans), or URL lists (webhook, command, Varnish purges, nginx,
//!   Cloudflare, Fastly, Bunny). "Everything" is scoped to a rule's URL space.
//! * `deliver`: sends a purge's requests with classification of failures, capped jittered
//!   backoff and per-account pacing, and records them: the one path for the daemon and
//!   `purgewatch purge`.
//! * `providers`: one file per target type, each its requests and how its replies are judged:
//!   `sitehost`, `vims`, `webhook`, `command`, `cache` (varnish, nginx), `cloudflare`, `fastly`,
//!   `bunny`. A cache fleet is one target per endpoint (`Config::groups`). `providers::target`
//!   is a target as the rules define it (its kind, the shape of purge it takes) and
//!   `providers::Keys` what a type's file reads its keys with (the loader implements it).
//! * `state`: the durable store (manifests, pending purges, results) in the state directory;
//!   `state::Writer` writes the daemon's share of it on a thread of its own, in order.
//! * `daemon`: `daemon::run(config, options, signals)`. Its parts each own their state and are
//!   tested alone: the `RuleSet` (the rules at run time, addressed by a `RuleId`, each with its
//!   `Phase` — idle, comparing, missing — and the manifests), the `Dispatcher` (each target's
//!   queue, its provider, sends, provider jobs, pacing, `on_failure`) and the `Verifier` (which
//!   files every target of their rule has purged, and the checks of the edge). `mod.rs` is the
//!   `select!` loop that routes each wake-up between them; `lifecycle`, `events`, `settle`,
//!   `writeback` and `rules` each handle one kind of reaction; `catchup` runs each rule's first
//!   look at its tree at start-up on every core. [`cli`] is the command line, [`commands`] one
//!   file per subcommand.
//!
//! [`config`] loads and validates the rules file and the files its `include:` globs take (each
//! judged on its own at a reload). [`request`] holds the types that pass between
//! stages (a pending file, a provider request); `clock` the time the state records; `signals`
//! the four signals the daemon answers (in one place); [`shutdown`] the token that says a stop
//! was asked for (handed to long walks and reads); `memory` the allocator and giving memory back after a storm;
//! `threads` which threads may preempt the loop.
//!
//! Around the pipeline: `metrics` counts what each stage does and `monitor` serves it
//! (`/metrics`, `/healthz`) on `metrics_listen`; `hook` runs `on_failure` when a purge fails;
//! `verify` checks what the edge serves once every target of a rule has purged a file (the
//! daemon's `Verifier` keeps that count), and re-purges what is still stale through every target.

// Every item that is `pub` is reachable from outside the crate; the rest say `pub(crate)`.
#![warn(unreachable_pub)]

/// Every target type: its variant of `config::TargetKind` and its file in `src/providers/` with
/// the type of its settings. The one list a new provider is added to: the enum of target kinds,
/// the list of types whose keys the loader reads (`providers::TYPES`) and [`each_kind!`] are
/// made from it. Hands the list to the macro `$then` (after `[$args]`, when given).
macro_rules! with_target_types {
    ($then:ident $([$($args:tt)*])?) => {
        $then! {
            [$($($args)*)?]
            SiteHost => sitehost::SiteHost,
            Vims => vims::Vims,
            Webhook => webhook::Webhook,
            Command => command::CommandTarget,
            Varnish => varnish::Varnish,
            Nginx => nginx::Nginx,
            Cloudflare => cloudflare::Cloudflare,
            Fastly => fastly::Fastly,
            Bunny => bunny::Bunny,
            CloudFront => cloudfront::CloudFront,
        }
    };
}

/// Runs `$body` with `$k` bound to the settings of whichever target type `$kind` holds (each
/// implements [`providers::Kind`]).
macro_rules! each_kind {
    ($kind:expr, $k:ident => $body:expr) => {
        with_target_types!(each_kind_match [$kind, $k, $body])
    };
}

/// [`each_kind!`]'s `match`, over the list of [`with_target_types!`].
macro_rules! each_kind_match {
    ([$kind:expr, $k:ident, $body:expr] $($variant:ident => $file:ident::$settings:ident,)*) => {
        match $kind {
            $($crate::providers::target::TargetKind::$variant($k) => $body,)*
        }
    };
}

pub mod batch;
pub mod cli;
pub(crate) mod clock;
pub mod commands;
pub mod compare;
pub mod config;
pub(crate) mod daemon;
pub(crate) mod deliver;
pub(crate) mod escape;
pub(crate) mod hashahead;
pub mod hashing;
pub(crate) mod hook;
pub mod limits;
pub mod links;
pub(crate) mod logging;
pub mod manifest;
pub(crate) mod memory;
pub(crate) mod metrics;
pub(crate) mod monitor;
pub mod plan;
pub(crate) mod providers;
pub mod request;
pub mod route;
pub(crate) mod secret;
pub mod shutdown;
pub(crate) mod signals;
pub(crate) mod state;
pub(crate) mod systemd;
pub(crate) mod threads;
pub(crate) mod verify;
pub mod walk;
pub(crate) mod watch;

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
//! * `compare`: a rule's record and [`manifest`] (what the tree looked like at the last purge:
//!   size, mtime, a 128-bit BLAKE3 digest, in one compact sorted table per rule) → what
//!   changed; run on a blocking thread, at most two per core at once. A path is purged only
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
//!   `bunny`. A cache fleet is one target per endpoint (`Config::groups`).
//! * `state`: the durable store (manifests, pending purges, results) in the state directory;
//!   `state::Writer` writes the daemon's share of it on a thread of its own, in order.
//! * `daemon`: `daemon::run(config, options, signals)`: `mod.rs` is the `select!` loop, and
//!   `lifecycle`, `events`, `settle`, `dispatch`, `writeback` and `rules` each handle one kind of
//!   reaction; `catchup` runs each rule's first look at its tree at start-up on every core. [`cli`] is the command line, [`commands`] one file per subcommand.
//!
//! [`config`] loads and validates the rules file and the files its `include:` globs take (each
//! judged on its own at a reload). [`request`] holds the types that pass between
//! stages (a pending file, a provider request); `clock` the time the state records; `signals`
//! the four signals the daemon answers (in one place); `shutdown` whether a stop was asked for
//! (long walks look at it); `memory` the allocator and giving memory back after a storm;
//! `threads` which threads may preempt the loop.
//!
//! Around the pipeline: `metrics` counts what each stage does and `monitor` serves it
//! (`/metrics`, `/healthz`) on `metrics_listen`; `hook` runs `on_failure` when a purge fails;
//! `verify` checks what the edge serves once every target of a rule has purged a file (the
//! daemon's `gate` keeps that count), and re-purges what is still stale through every target.

// Every item that is `pub` is reachable from outside the crate; the rest say `pub(crate)`.
#![warn(unreachable_pub)]

/// Runs `$body` with `$k` bound to the settings of whichever target type `$kind` holds (each
/// implements [`providers::Kind`]): the one place that lists the types' variants.
macro_rules! each_kind {
    ($kind:expr, $k:ident => $body:expr) => {
        match $kind {
            $crate::config::TargetKind::SiteHost($k) => $body,
            $crate::config::TargetKind::Vims($k) => $body,
            $crate::config::TargetKind::Webhook($k) => $body,
            $crate::config::TargetKind::Command($k) => $body,
            $crate::config::TargetKind::Varnish($k) => $body,
            $crate::config::TargetKind::Nginx($k) => $body,
            $crate::config::TargetKind::Cloudflare($k) => $body,
            $crate::config::TargetKind::Fastly($k) => $body,
            $crate::config::TargetKind::Bunny($k) => $body,
            $crate::config::TargetKind::CloudFront($k) => $body,
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

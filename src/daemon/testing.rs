//! A daemon on a real temporary site, for the unit tests of the daemon's files: real inotify,
//! a real state directory, the real hashing worker and comparisons on blocking threads. Its one
//! target points at a port nobody listens on, so a send starts (and is seen in `sends`) but
//! reaches nobody. Nothing runs the loop: a test calls the reaction it tests, and takes what
//! the worker or a comparison sends back from [`Harness::hashed`] and [`Harness::compared`].

use std::path::PathBuf;

use super::*;

pub(super) struct Harness {
    pub d: Daemon,
    /// The queue the daemon's real watcher fills.
    pub queue: Arc<EventQueue>,
    pub site: PathBuf,
    pub rules: PathBuf,
    pub compared: mpsc::UnboundedReceiver<(u64, Compared)>,
    pub hashed: mpsc::UnboundedReceiver<hashahead::Done>,
    pub tmp: tempfile::TempDir,
}

/// Rules with one VIMS target (`cdn`) and one rule (`site`) watching `public`, `extra` appended.
pub(super) fn rules_yaml(tmp: &Path, extra: &str) -> String {
    format!(
        "state_dir: {state}
defaults:
  debounce: 1s
  max_delay: 30s
targets:
  cdn:
    type: vims
    api_url: http://127.0.0.1:9
    token: sk_live_testtoken
    cdn_id: 7
    host: all
rules:
  - name: site
    watch: {site}
    targets: [cdn]
    exclude: [\"**/*.tmp\"]
{extra}",
        state = tmp.join("state").display(),
        site = tmp.join("public").display(),
    )
}

impl Harness {
    /// A site holding `files`, its baseline taken, the daemon started on it.
    pub(super) fn new(files: &[(&str, &str)], opts: Options) -> Harness {
        let tmp = tempfile::tempdir().unwrap();
        let site = tmp.path().join("public");
        std::fs::create_dir_all(&site).unwrap();
        for (rel, text) in files {
            let p = site.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let rules = tmp.path().join("rules.yaml");
        std::fs::write(&rules, rules_yaml(tmp.path(), "")).unwrap();
        Harness::start(tmp, site, rules, opts)
    }

    /// The daemon started (again) on the site and rules of `tmp`.
    pub(super) fn start(tmp: tempfile::TempDir, site: PathBuf, rules: PathBuf, opts: Options) -> Harness {
        let config = config::load(
            &rules,
            LoadOptions {
                dry_run: opts.dry_run,
                ..Default::default()
            },
        )
        .unwrap()
        .config;
        let (hash_tx, hashed) = mpsc::unbounded_channel();
        let (compared_tx, compared) = mpsc::unbounded_channel();
        let queue = Arc::new(EventQueue::default());
        let wiring = lifecycle::Wiring {
            queue: queue.clone(),
            hasher: hashahead::Worker::start(hash_tx, crate::shutdown::Stop::NEVER),
            compared_tx,
            stopping: crate::shutdown::Stop::NEVER,
        };
        let d = Daemon::start(config, opts, wiring).unwrap();
        Harness {
            d,
            queue,
            site,
            rules,
            compared,
            hashed,
            tmp,
        }
    }

    pub(super) fn write(&self, rel: &str, text: &str) {
        std::fs::write(self.site.join(rel), text).unwrap();
    }

    /// An event for `rel` (a file being written), as the watcher reports it.
    pub(super) fn event(&mut self, rel: &str) {
        self.events(&[rel], false);
    }

    /// Events for `rels` in one batch; `done`: each left its file finished (closed after
    /// writing), so it is worth hashing ahead.
    pub(super) fn events(&mut self, rels: &[&str], done: bool) {
        let taken = Taken {
            msgs: vec![WatchMsg::Paths {
                paths: rels.iter().map(|r| self.site.join(r)).collect(),
                done,
                removed: false,
                attrib: false,
                no_new_dir: true,
            }],
            newest: Instant::now(),
        };
        self.d.on_watch(taken);
    }

    /// The next comparison to come back. (No timeout: on the paused clock a timer would fire
    /// at once. A comparison runs on a blocking thread, which holds the paused clock still.)
    pub(super) async fn next_compared(&mut self) -> (u64, Compared) {
        self.compared.recv().await.expect("the channel is open")
    }

    /// The next result of the hashing worker.
    pub(super) async fn next_hashed(&mut self) -> hashahead::Done {
        self.hashed.recv().await.expect("the channel is open")
    }

    /// The id of the rule `site`.
    pub(super) fn id(&self) -> RuleId {
        self.d.rules.named("site").expect("the rule is loaded")
    }

    /// The paths queued for `target`.
    pub(super) fn pending(&self, target: &str) -> Vec<String> {
        self.d
            .dispatch
            .queued(target)
            .map(|p| p.keys().map(|(_, path)| path.clone()).collect())
            .unwrap_or_default()
    }

    /// Lets the open batches fall due and their one comparison come back and be queued (and
    /// sent).
    pub(super) async fn settle_due(&mut self) {
        self.debounce().await;
        self.d.fire_due();
        let (id, c) = self.next_compared().await;
        self.d.on_compared(id, c);
    }

    /// Waits for every write the daemon asked of its state writer.
    pub(super) fn synced(&self) {
        self.d.writer.as_ref().expect("not a dry run").sync();
    }

    /// Lets the debounce of every open batch run out.
    pub(super) async fn debounce(&self) {
        tokio::time::advance(Duration::from_millis(1100)).await;
    }
}

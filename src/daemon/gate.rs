//! When a change may be verified: a rule's public URL is served through all of its targets (an
//! origin cache behind a CDN, say), so the edge is checked only once every target of the rule
//! has purged the file — each target batches and sends on its own clock. The [`Gate`] owns
//! that bookkeeping; the daemon tells it what was queued, purged or given up, and it answers
//! with the files that are ready, per rule.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::config::Rule;
use crate::request::PendingFile;

#[derive(Default)]
pub(super) struct Gate {
    /// (rule, path) → the change and the targets that have not purged it yet.
    waiting: HashMap<(String, String), Waiting>,
}

struct Waiting {
    file: PendingFile,
    targets: BTreeSet<String>,
}

impl Gate {
    /// `files` of `rule` were queued for every target of the rule: each waits for all of them
    /// (a newer change of a file waiting already starts its wait over).
    pub(super) fn expect(&mut self, rule: &Rule, files: impl IntoIterator<Item = PendingFile>) {
        if rule.verify.is_none() && !rule.warm {
            return;
        }
        let targets: BTreeSet<String> = rule.targets.iter().cloned().collect();
        for file in files {
            let key = (file.rule.clone(), file.path.clone());
            self.waiting.insert(
                key,
                Waiting {
                    file,
                    targets: targets.clone(),
                },
            );
        }
    }

    /// `target` purged `batch` (and its jobs ended well): the files now purged by every target
    /// of their rule, per rule.
    pub(super) fn purged(&mut self, target: &str, batch: &[PendingFile]) -> BTreeMap<String, Vec<PendingFile>> {
        let mut ready: BTreeMap<String, Vec<PendingFile>> = BTreeMap::new();
        for f in batch {
            let key = (f.rule.clone(), f.path.clone());
            let Some(w) = self.waiting.get_mut(&key) else { continue };
            w.targets.remove(target);
            if w.targets.is_empty()
                && let Some(w) = self.waiting.remove(&key)
            {
                ready.entry(w.file.rule.clone()).or_default().push(w.file);
            }
        }
        ready
    }

    /// `target` could not purge `batch` (or its job failed): those files are not verified (the
    /// failure is reported on its own).
    pub(super) fn failed(&mut self, batch: &[PendingFile]) {
        for f in batch {
            self.waiting.remove(&(f.rule.clone(), f.path.clone()));
        }
    }

    /// Rules that are gone, or that no longer verify or warm, wait for nothing.
    pub(super) fn keep_rules(&mut self, rules: &[Rule]) {
        self.waiting
            .retain(|(rule, _), _| rules.iter().any(|r| &r.name == rule && (r.verify.is_some() || r.warm)));
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Verify, VerifyCheck};
    use crate::request::ChangeKind;

    fn rule() -> Rule {
        let mut r = Rule::new("site", "/w");
        r.targets = vec!["origin".into(), "cdn".into()];
        r.verify = Some(Verify {
            base_url: "https://x".into(),
            sample: 5,
            after: std::time::Duration::ZERO,
            repurge: 2,
            check: VerifyCheck::Content,
        });
        r
    }

    fn file(path: &str) -> PendingFile {
        PendingFile {
            rule: "site".into(),
            path: path.into(),
            kind: ChangeKind::Modified,
        }
    }

    #[test]
    fn a_file_is_ready_once_every_target_of_its_rule_purged_it() {
        let mut g = Gate::default();
        g.expect(&rule(), [file("a.html"), file("b.html")]);
        // The origin purged both: nothing is ready while the CDN has not.
        assert!(g.purged("origin", &[file("a.html"), file("b.html")]).is_empty());
        // The CDN purged one of them in this batch, the other in the next.
        let ready = g.purged("cdn", &[file("a.html")]);
        assert_eq!(ready["site"], vec![file("a.html")]);
        let ready = g.purged("cdn", &[file("b.html")]);
        assert_eq!(ready["site"], vec![file("b.html")]);
        assert_eq!(g.len(), 0);
    }

    #[test]
    fn a_newer_change_waits_again_and_a_failure_drops_the_file() {
        let mut g = Gate::default();
        g.expect(&rule(), [file("a.html")]);
        assert!(g.purged("origin", &[file("a.html")]).is_empty());
        // Changed again before the CDN purged it: both targets must purge the new bytes.
        g.expect(&rule(), [file("a.html")]);
        assert!(g.purged("cdn", &[file("a.html")]).is_empty());
        assert_eq!(g.purged("origin", &[file("a.html")])["site"].len(), 1);
        g.expect(&rule(), [file("b.html")]);
        g.failed(&[file("b.html")]);
        assert_eq!(g.len(), 0);
        // A rule without verify or warm waits for nothing.
        let mut plain = rule();
        plain.verify = None;
        g.expect(&plain, [file("c.html")]);
        assert_eq!(g.len(), 0);
    }
}

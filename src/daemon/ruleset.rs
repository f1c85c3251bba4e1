//! The rules at run time and their records: the [`RuleSet`] owns each rule's runtime state
//! ([`RuleRt`]), the manifest of its tree, and the index that finds the rules an event's path
//! concerns. A rule is addressed by its [`RuleId`], which stays its own while it is loaded
//! (rules removed by a reload never shift another rule's id).

use std::collections::{BTreeMap, HashMap};
use std::ops::{Index, IndexMut};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::Rule;
use crate::hashahead::{self, Record};
use crate::manifest::Manifest;
use crate::route::Filter;

use super::DaemonError;

/// A loaded rule's handle: given when it is added, never reused while the daemon runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct RuleId(u32);

impl RuleId {
    /// The `n`th id given, for tests that need ids without rules.
    #[cfg(test)]
    pub(super) fn numbered(n: u32) -> RuleId {
        RuleId(n)
    }
}

#[derive(Default)]
pub(super) struct RuleSet {
    /// In the order they were added (ids grow): the rules file's order, new rules of a reload
    /// after the others.
    rules: BTreeMap<RuleId, RuleRt>,
    next: u32,
    /// Each rule's record of its tree, by rule name, shared with the comparison running for it
    /// (if any), the planner and the verifier.
    manifests: BTreeMap<String, Arc<Manifest>>,
    /// Rules by tree root and watched path (see [`RuleSet::at`]).
    by_root: HashMap<PathBuf, Vec<RuleId>>,
}

impl RuleSet {
    /// Adds a rule; its id is returned.
    pub(super) fn add(&mut self, rt: RuleRt) -> RuleId {
        let id = RuleId(self.next);
        self.next += 1;
        self.index(id, &rt);
        self.rules.insert(id, rt);
        id
    }

    /// Removes a rule, and its manifest.
    pub(super) fn remove(&mut self, id: RuleId) -> Option<RuleRt> {
        let rt = self.rules.remove(&id)?;
        self.manifests.remove(&rt.rule.name);
        self.reindex();
        Some(rt)
    }

    pub(super) fn get(&self, id: RuleId) -> Option<&RuleRt> {
        self.rules.get(&id)
    }

    pub(super) fn len(&self) -> usize {
        self.rules.len()
    }

    /// Every rule's id, in order (a copy: the rules may change while they are gone through).
    pub(super) fn ids(&self) -> Vec<RuleId> {
        self.rules.keys().copied().collect()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (RuleId, &RuleRt)> {
        self.rules.iter().map(|(id, rt)| (*id, rt))
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &RuleRt> {
        self.rules.values()
    }

    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut RuleRt> {
        self.rules.values_mut()
    }

    /// The first rule (in order) that `f` picks.
    pub(super) fn find(&self, f: impl Fn(&RuleRt) -> bool) -> Option<RuleId> {
        self.iter().find(|(_, rt)| f(rt)).map(|(id, _)| id)
    }

    /// The rule named `name`.
    pub(super) fn named(&self, name: &str) -> Option<RuleId> {
        self.find(|rt| rt.rule.name == name)
    }

    /// Rule `id` and its manifest, to change both (the manifest copied first when a comparison
    /// still reads it).
    pub(super) fn with_manifest(&mut self, id: RuleId) -> Option<(&mut RuleRt, &mut Manifest)> {
        let rt = self.rules.get_mut(&id)?;
        let m = self.manifests.get_mut(&rt.rule.name)?;
        Some((rt, Arc::make_mut(m)))
    }

    /// Every rule's manifest, by rule name.
    pub(super) fn manifests(&self) -> &BTreeMap<String, Arc<Manifest>> {
        &self.manifests
    }

    pub(super) fn manifest(&self, name: &str) -> Option<&Arc<Manifest>> {
        self.manifests.get(name)
    }

    /// Rule `name`'s manifest, to change (an empty one made when it has none).
    pub(super) fn manifest_mut(&mut self, name: &str) -> &mut Arc<Manifest> {
        self.manifests.entry(name.to_string()).or_default()
    }

    pub(super) fn set_manifest(&mut self, name: String, manifest: Arc<Manifest>) {
        self.manifests.insert(name, manifest);
    }

    /// The rules an event at `path` may concern: those whose tree holds it, or whose watched
    /// path it is (a swap). Found by the path's ancestors in the index, not by asking every
    /// rule: a host's thousand rules would cost a thousand checks an event.
    pub(super) fn at(&self, path: &Path) -> Vec<RuleId> {
        let mut out: Vec<RuleId> = path
            .ancestors()
            .filter_map(|a| self.by_root.get(a))
            .flatten()
            .copied()
            .collect();
        if out.len() > 1 {
            out.sort_unstable();
            out.dedup();
        }
        out
    }

    /// Rebuilds the index of rules by tree and watched path (after a rule is removed or its
    /// tree re-pointed).
    pub(super) fn reindex(&mut self) {
        self.by_root.clear();
        let rules = std::mem::take(&mut self.rules);
        for (id, rt) in &rules {
            self.index(*id, rt);
        }
        self.rules = rules;
    }

    fn index(&mut self, id: RuleId, rt: &RuleRt) {
        self.by_root.entry(rt.root.clone()).or_default().push(id);
        if rt.rule.watch != rt.root {
            self.by_root.entry(rt.rule.watch.clone()).or_default().push(id);
        }
    }
}

impl Index<RuleId> for RuleSet {
    type Output = RuleRt;

    /// Rule `id`, which must be loaded: ids are only held while it is (a lookup of one that
    /// may be gone uses [`RuleSet::get`]).
    fn index(&self, id: RuleId) -> &RuleRt {
        &self.rules[&id]
    }
}

impl IndexMut<RuleId> for RuleSet {
    fn index_mut(&mut self, id: RuleId) -> &mut RuleRt {
        self.rules.get_mut(&id).expect("a loaded rule")
    }
}

/// A rule at run time.
pub(super) struct RuleRt {
    pub(super) rule: Rule,
    pub(super) filter: Filter,
    /// The directory actually watched: `rule.watch` with symlinks resolved.
    pub(super) root: PathBuf,
    pub(super) root_id: (u64, u64),
    /// Paths with events and hashes taken ahead since the last comparison.
    pub(super) record: Record,
    /// Where its tree stands against its record: idle, being compared, or missing.
    pub(super) phase: Phase,
    /// The whole tree must be compared at the next batch (not only the paths with events).
    pub(super) rescan: Option<Rescan>,
    /// How much of the tree inotify watches.
    pub(super) coverage: Coverage,
    /// The sequence number of a whole-tree hash still running on the worker (after a swap).
    pub(super) tree_pending: Option<u64>,
    /// The watched directory was removed since it was last watched: its watch is gone.
    pub(super) lost: bool,
    /// Hashes taken ahead that came back while it was being compared, recorded once that is in.
    pub(super) held: std::collections::VecDeque<hashahead::Done>,
    /// When its last comparison began (ms since the epoch, less one).
    pub(super) compare_began_ms: i64,
    /// When the first event since the last comparison began was read (ms since the epoch): a
    /// batch's latency counts from its first change, not from its comparison.
    pub(super) first_event_ms: Option<i64>,
    /// That time for the comparison running now.
    pub(super) compared_first_ms: Option<i64>,
}

/// A rule's comparisons: at most one runs at a time, and its manifest is only read until it
/// is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Nothing is being compared; changes (if any) wait for the next batch.
    Idle,
    /// Comparison `id` runs (see [`crate::compare`]). `again`: a batch fell due meanwhile, to
    /// be compared once this one is in.
    Comparing { id: u64, again: bool },
    /// The watched directory was not there at the last try (logged once, and said at
    /// `/healthz`, until it is back): compared when it is.
    Missing,
}

/// A comparison of the whole tree, asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Rescan {
    /// The sequence number it was asked at: hashes taken ahead since may stand for it.
    pub(super) asked: u64,
    /// Events were lost (an overflow): the rescan walks the whole tree, so events until it
    /// begins are not recorded (in a host's every-site storm, a million paths' records only to
    /// be walked again).
    pub(super) events_lost: bool,
}

/// Why every tree (or one) is compared whole: the `reason` of `purgewatch_rescans_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RescanReason {
    /// The kernel's event queue overflowed: events were lost.
    Overflow,
    /// The daemon's own event queue was full: events were dropped.
    Behind,
    /// SIGUSR1.
    Signal,
    /// The watched directory was replaced or re-pointed.
    Swap,
    /// The tree is not fully watched (the kernel's limits): rescanned every `POLL_EVERY`.
    WatchLimit,
}

impl RescanReason {
    /// Its label in `/metrics`.
    pub(super) fn label(self) -> &'static str {
        match self {
            RescanReason::Overflow => "overflow",
            RescanReason::Behind => "behind",
            RescanReason::Signal => "signal",
            RescanReason::Swap => "swap",
            RescanReason::WatchLimit => "watch_limit",
        }
    }

    /// Events were lost: until the rescan begins, a tree's events only time its batch.
    pub(super) fn events_lost(self) -> bool {
        matches!(self, RescanReason::Overflow | RescanReason::Behind)
    }
}

/// How much of a rule's tree inotify watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Coverage {
    Full,
    /// Not all of it (the kernel's limits): rescanned every [`super::POLL_EVERY`].
    Partial,
}

pub(super) fn root_id(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

impl RuleRt {
    /// Rule `rule` at run time, its tree found (symlinks resolved) and nothing recorded yet.
    pub(super) fn new(rule: Rule) -> Result<RuleRt, DaemonError> {
        let root = std::fs::canonicalize(&rule.watch).map_err(|error| DaemonError::Root {
            rule: rule.name.clone(),
            path: rule.watch.clone(),
            error,
        })?;
        let id = root_id(&root).map_err(|error| DaemonError::Root {
            rule: rule.name.clone(),
            path: root.clone(),
            error,
        })?;
        Ok(RuleRt {
            filter: rule.filter(),
            root,
            root_id: id,
            record: Record::default(),
            phase: Phase::Idle,
            rescan: None,
            coverage: Coverage::Full,
            tree_pending: None,
            lost: false,
            held: Default::default(),
            compare_began_ms: 0,
            first_event_ms: None,
            compared_first_ms: None,
            rule,
        })
    }

    /// The comparison running for it.
    pub(super) fn comparing(&self) -> Option<u64> {
        match self.phase {
            Phase::Comparing { id, .. } => Some(id),
            Phase::Idle | Phase::Missing => None,
        }
    }

    /// Comparison `id` began.
    pub(super) fn compare_began(&mut self, id: u64) {
        self.phase = Phase::Comparing { id, again: false };
    }

    /// A batch fell due while it is compared: compared again once that is in.
    pub(super) fn compare_again(&mut self) {
        if let Phase::Comparing { again, .. } = &mut self.phase {
            *again = true;
        }
    }

    /// Its comparison is in. Returns whether a batch fell due meanwhile.
    pub(super) fn compare_ended(&mut self) -> bool {
        let again = matches!(self.phase, Phase::Comparing { again: true, .. });
        self.phase = Phase::Idle;
        again
    }

    /// Whether a batch has anything to compare: paths with events, or the whole tree.
    pub(super) fn has_work(&self) -> bool {
        self.rescan.is_some() || self.record.has_dirty()
    }

    /// Asks for the whole tree to be compared (at sequence number `at`). `events_lost`: after
    /// an overflow, events are not recorded until that comparison begins.
    pub(super) fn ask_rescan(&mut self, at: u64, events_lost: bool) {
        let lost = events_lost || self.events_lost();
        self.rescan = Some(Rescan {
            asked: at,
            events_lost: lost,
        });
    }

    /// Events were lost: they only time the batch until the rescan they asked for begins.
    pub(super) fn events_lost(&self) -> bool {
        self.rescan.is_some_and(|r| r.events_lost)
    }

    /// Whether it is rescanned every [`super::POLL_EVERY`] (not fully watched).
    pub(super) fn polled(&self) -> bool {
        self.coverage == Coverage::Partial
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, root: &Path) -> RuleRt {
        RuleRt::new(Rule::new(name, root)).unwrap()
    }

    #[test]
    fn a_rule_keeps_its_id_and_events_find_it_by_path_after_others_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let tmp = std::fs::canonicalize(tmp.path()).unwrap();
        for d in ["a", "b", "b/inner", "c"] {
            std::fs::create_dir_all(tmp.join(d)).unwrap();
        }
        let mut set = RuleSet::default();
        let a = set.add(rule("a", &tmp.join("a")));
        let b = set.add(rule("b", &tmp.join("b")));
        let inner = set.add(rule("inner", &tmp.join("b/inner")));
        set.set_manifest("a".into(), Arc::new(Manifest::default()));
        assert_eq!(
            set.at(&tmp.join("b/inner/x.html")),
            [b, inner],
            "nested trees: both rules"
        );
        assert_eq!(set.at(&tmp.join("a/x.html")), [a]);
        assert!(set.at(&tmp.join("c/x.html")).is_empty());

        assert_eq!(set.remove(a).map(|r| r.rule.name), Some("a".to_string()));
        assert!(set.manifest("a").is_none(), "its manifest goes with it");
        assert!(set.get(a).is_none() && set.remove(a).is_none());
        // The others keep their ids; a rule added now gets a new one, even under an old name.
        assert_eq!(set[b].rule.name, "b");
        assert_eq!(set.named("inner"), Some(inner));
        let again = set.add(rule("a", &tmp.join("c")));
        assert!(again != a && again > inner);
        assert_eq!(set.ids(), [b, inner, again], "in the order added");
        assert_eq!(set.at(&tmp.join("c/x.html")), [again]);
        assert!(set.at(&tmp.join("a/x.html")).is_empty());
    }

    #[test]
    fn a_rules_comparisons_and_rescans_move_through_their_states() {
        let tmp = tempfile::tempdir().unwrap();
        let mut rt = rule("site", tmp.path());
        assert_eq!((rt.phase, rt.comparing(), rt.has_work()), (Phase::Idle, None, false));
        // A batch due while idle does not ask for another comparison.
        rt.compare_again();
        assert_eq!(rt.phase, Phase::Idle);
        rt.compare_began(7);
        assert_eq!(rt.comparing(), Some(7));
        assert!(!rt.compare_ended(), "no batch fell due meanwhile");
        rt.compare_began(8);
        rt.compare_again();
        assert!(rt.compare_ended(), "a batch fell due meanwhile");
        assert_eq!(rt.phase, Phase::Idle);

        // An overflow's rescan keeps saying events were lost whatever asks again before it
        // begins; a plain rescan does not.
        rt.ask_rescan(3, false);
        assert!(rt.has_work() && !rt.events_lost());
        rt.ask_rescan(4, true);
        rt.ask_rescan(5, false);
        assert_eq!(
            rt.rescan,
            Some(Rescan {
                asked: 5,
                events_lost: true
            })
        );
        rt.rescan = None;
        assert!(!rt.events_lost() && !rt.has_work());
        assert!(!rt.polled());
        rt.coverage = Coverage::Partial;
        assert!(rt.polled());
    }

    #[test]
    fn rescan_reasons_are_the_labels_the_readme_lists_and_only_overflows_lose_events() {
        use RescanReason::*;
        let all = [Overflow, Behind, Signal, Swap, WatchLimit];
        let labels: Vec<&str> = all.iter().map(|r| r.label()).collect();
        assert_eq!(labels, ["overflow", "behind", "signal", "swap", "watch_limit"]);
        let readme = include_str!("../../README.md");
        for l in &labels {
            assert!(readme.contains(&format!("`{l}`")), "README does not name {l}");
        }
        let lost: Vec<RescanReason> = all.into_iter().filter(|r| r.events_lost()).collect();
        assert_eq!(lost, [Overflow, Behind]);
    }
}

//! Each rule's first look at its tree at start-up — its baseline (every file read) or the
//! comparison of the whole tree with its record (every file's size and mtime) — run on every
//! core, while the daemon watches and reads the records of the rules after it.
//!
//! A host's thousand rules are a thousand independent looks: run one after the other they left
//! a core idle, and the start took as long as all of them. The daemon hands each look to a
//! [`Pool`] as soon as its rule is watched, and takes in what came back between rules and at
//! the end (in whatever order the looks end: each is about its own rule).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, mpsc};

use super::RuleId;
use crate::compare::{self, Compared};
use crate::manifest::Manifest;
use crate::route::Filter;
use crate::shutdown::Stop;

/// What is left of a rule's first look at its tree (see [`super::Daemon::begin_rule`]).
pub(crate) enum FirstLook {
    /// No record of the tree: take it as it is.
    Baseline {
        rule: RuleId,
        root: PathBuf,
        filter: Filter,
        stop: Stop,
    },
    /// Compare the whole tree with its record; `found`: files already found changed (paths the
    /// last run had events for).
    Compare {
        rule: RuleId,
        job: Box<compare::Job>,
        found: usize,
    },
}

/// What a first look found.
pub(crate) enum Looked {
    /// `None`: cut short by a stop.
    Baseline { rule: RuleId, manifest: Option<Manifest> },
    Compared {
        rule: RuleId,
        compared: Box<Compared>,
        found: usize,
    },
}

impl FirstLook {
    /// Runs the look (on the calling thread).
    pub(crate) fn run(self) -> Looked {
        match self {
            FirstLook::Baseline {
                rule,
                root,
                filter,
                stop,
            } => Looked::Baseline {
                rule,
                manifest: Manifest::baseline(&root, &filter, stop),
            },
            FirstLook::Compare { rule, job, found } => Looked::Compared {
                rule,
                compared: Box::new(job.run_here()),
                found,
            },
        }
    }
}

/// Threads that run first looks, one per core.
pub(crate) struct Pool {
    looks: Option<mpsc::Sender<FirstLook>>,
    looked: mpsc::Receiver<Looked>,
    /// Looks handed over and not taken back yet.
    out: usize,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Pool {
    pub(crate) fn new() -> Pool {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (looks, rx) = mpsc::channel::<FirstLook>();
        let (tx, looked) = mpsc::channel();
        let rx = Arc::new(Mutex::new(rx));
        let threads = (0..n)
            .filter_map(|k| {
                let (rx, tx) = (rx.clone(), tx.clone());
                std::thread::Builder::new()
                    .name(format!("first-look-{k}"))
                    .spawn(move || {
                        loop {
                            let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                            let Ok(look) = next else { break };
                            if tx.send(look.run()).is_err() {
                                break;
                            }
                        }
                    })
                    .ok()
            })
            .collect();
        Pool {
            looks: Some(looks),
            looked,
            out: 0,
            threads,
        }
    }

    /// Hands `look` to the next free thread (runs it here if there is none).
    pub(crate) fn push(&mut self, look: FirstLook) -> Option<Looked> {
        match &self.looks {
            Some(tx) if !self.threads.is_empty() => match tx.send(look) {
                Ok(()) => {
                    self.out += 1;
                    None
                }
                Err(mpsc::SendError(look)) => Some(look.run()),
            },
            _ => Some(look.run()),
        }
    }

    /// What came back so far, without waiting.
    pub(crate) fn ready(&mut self) -> Vec<Looked> {
        let mut out = Vec::new();
        while let Ok(l) = self.looked.try_recv() {
            self.out -= 1;
            out.push(l);
        }
        out
    }

    /// Waits for the next look still out (`None`: none is).
    pub(crate) fn next(&mut self) -> Option<Looked> {
        if self.out == 0 {
            return None;
        }
        // No more looks: the threads end once they are done.
        self.looks = None;
        let l = self.looked.recv().ok()?;
        self.out -= 1;
        Some(l)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.looks = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Rule;

    /// Looks handed to the pool all come back, each with its own rule's result, and the
    /// threads end when the pool goes.
    #[test]
    fn every_look_comes_back_once() {
        let tmp = tempfile::tempdir().unwrap();
        let mut pool = Pool::new();
        let mut back = Vec::new();
        for r in 0..20 {
            let root = tmp.path().join(format!("r{r}"));
            std::fs::create_dir_all(&root).unwrap();
            for f in 0..r {
                std::fs::write(root.join(format!("{f}.html")), "x").unwrap();
            }
            let filter = Rule::new("r", &root).filter();
            back.extend(pool.push(FirstLook::Baseline {
                rule: RuleId::numbered(r),
                root,
                filter,
                stop: Stop::NEVER,
            }));
            back.extend(pool.ready());
        }
        while let Some(l) = pool.next() {
            back.push(l);
        }
        let mut got: Vec<(RuleId, usize)> = back
            .into_iter()
            .map(|l| match l {
                Looked::Baseline { rule, manifest } => (rule, manifest.unwrap().len()),
                Looked::Compared { .. } => unreachable!(),
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            (0..20).map(|r| (RuleId::numbered(r), r as usize)).collect::<Vec<_>>()
        );
        drop(pool);
    }
}

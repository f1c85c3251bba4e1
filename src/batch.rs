//! Per-target debounce: a batch goes out `debounce` after the last change, and never later than
//! `max_delay` after the first, so a deploy that never goes quiet is still purged.
//!
//! The batcher only keeps time; the daemon sleeps until [`Batcher::next_deadline`] and asks for
//! [`Batcher::take_due`]. A target whose purge is still being sent (or retried) is *busy*: its new
//! changes collect into the next batch, which goes out once the current one is done.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Window {
    first: Instant,
    last: Instant,
    debounce: Duration,
    max_delay: Duration,
    /// Put off by [`Batcher::hold`] until [`Batcher::release`].
    held: bool,
}

impl Window {
    fn deadline(&self) -> Instant {
        (self.last + self.debounce).min(self.first + self.max_delay)
    }
}

#[derive(Debug, Default)]
pub struct Batcher {
    windows: BTreeMap<String, Window>,
    busy: BTreeMap<String, bool>,
}

impl Batcher {
    pub fn new() -> Batcher {
        Batcher::default()
    }

    /// A change for `target` at `now`.
    pub fn touch(&mut self, target: &str, debounce: Duration, max_delay: Duration, now: Instant) {
        match self.windows.get_mut(target) {
            Some(w) => {
                // A change during a hold: the window debounces again from this change.
                w.last = if w.held { now } else { w.last.max(now) };
                w.held = false;
                w.debounce = debounce;
                w.max_delay = max_delay;
            }
            None => {
                self.windows.insert(
                    target.to_string(),
                    Window {
                        first: now,
                        last: now,
                        debounce,
                        max_delay,
                        held: false,
                    },
                );
            }
        }
    }

    /// Makes `target` due at once (work left from a previous run, or shutdown).
    pub fn due_now(&mut self, target: &str, now: Instant) {
        self.windows.insert(
            target.to_string(),
            Window {
                first: now,
                last: now,
                debounce: Duration::ZERO,
                max_delay: Duration::ZERO,
                held: false,
            },
        );
    }

    pub fn set_busy(&mut self, target: &str, busy: bool) {
        self.busy.insert(target.to_string(), busy);
    }

    pub fn is_busy(&self, target: &str) -> bool {
        self.busy.get(target).copied().unwrap_or(false)
    }

    /// When the next batch of a target that is not busy is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.windows
            .iter()
            .filter(|(t, _)| !self.is_busy(t))
            .map(|(_, w)| w.deadline())
            .min()
    }

    /// The targets whose batch is due at `now` (and not busy); their windows are closed.
    pub fn take_due(&mut self, now: Instant) -> Vec<String> {
        let due: Vec<String> = self
            .windows
            .iter()
            .filter(|(t, w)| w.deadline() <= now && !self.is_busy(t))
            .map(|(t, _)| t.clone())
            .collect();
        for t in &due {
            self.windows.remove(t);
        }
        due
    }

    /// The targets whose batch is due at `now` (and not busy), without closing their windows.
    pub fn due(&self, now: Instant) -> Vec<String> {
        self.windows
            .iter()
            .filter(|(t, w)| w.deadline() <= now && !self.is_busy(t))
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Closes `target`'s window.
    pub fn close(&mut self, target: &str) {
        self.windows.remove(target);
    }

    /// Puts a due batch off until `until` or [`Batcher::release`], but never past its
    /// `max_delay`.
    pub fn hold(&mut self, target: &str, until: Instant) {
        if let Some(w) = self.windows.get_mut(target) {
            w.last = until;
            w.debounce = Duration::ZERO;
            w.held = true;
        }
    }

    /// Makes a held batch due at `now` (what it waited for is done); other windows are left.
    pub fn release(&mut self, target: &str, now: Instant) {
        if let Some(w) = self.windows.get_mut(target)
            && w.held
        {
            w.last = now;
            w.held = false;
        }
    }

    /// Closes every window that is not busy, whatever its deadline (shutdown).
    pub fn take_all(&mut self) -> Vec<String> {
        self.take_due(Instant::now() + Duration::from_secs(365 * 24 * 3600))
    }

    pub fn forget(&mut self, target: &str) {
        self.windows.remove(target);
        self.busy.remove(target);
    }

    /// When `target`'s open window started.
    pub fn first_change(&self, target: &str) -> Option<Instant> {
        self.windows.get(target).map(|w| w.first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::{advance, sleep_until};

    const D: Duration = Duration::from_secs(2);
    const MAX: Duration = Duration::from_secs(30);

    /// Sleeps (in paused time) until the next batch and returns it with when it fired.
    async fn next(b: &mut Batcher) -> (Vec<String>, Instant) {
        let at = b.next_deadline().expect("a deadline");
        sleep_until(at).await;
        (b.take_due(Instant::now()), Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn fires_debounce_after_the_last_change() {
        let start = Instant::now();
        let mut b = Batcher::new();
        for _ in 0..5 {
            b.touch("cdn", D, MAX, Instant::now());
            advance(Duration::from_millis(500)).await;
        }
        let (due, at) = next(&mut b).await;
        assert_eq!(due, vec!["cdn"]);
        // Last change at 2.0s (the fifth touch), plus 2s of quiet.
        assert_eq!(at - start, Duration::from_secs(4));
        assert!(b.next_deadline().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn max_delay_caps_a_deploy_that_never_stops() {
        let start = Instant::now();
        let mut b = Batcher::new();
        let mut fired = None;
        for _ in 0..200 {
            b.touch("cdn", D, Duration::from_secs(10), Instant::now());
            advance(Duration::from_millis(500)).await;
            let due = b.take_due(Instant::now());
            if !due.is_empty() {
                fired = Some(Instant::now() - start);
                break;
            }
        }
        assert_eq!(fired, Some(Duration::from_secs(10)));
    }

    #[tokio::test(start_paused = true)]
    async fn targets_keep_their_own_timers() {
        let start = Instant::now();
        let mut b = Batcher::new();
        b.touch("www", Duration::from_secs(1), MAX, Instant::now());
        b.touch("cdn", Duration::from_secs(5), MAX, Instant::now());
        let (due, at) = next(&mut b).await;
        assert_eq!((due, at - start), (vec!["www".to_string()], Duration::from_secs(1)));
        let (due, at) = next(&mut b).await;
        assert_eq!((due, at - start), (vec!["cdn".to_string()], Duration::from_secs(5)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_target_collects_changes_for_one_next_batch() {
        let start = Instant::now();
        let mut b = Batcher::new();
        b.set_busy("cdn", true);
        for _ in 0..10 {
            b.touch("cdn", D, MAX, Instant::now());
            advance(Duration::from_millis(100)).await;
        }
        assert!(b.next_deadline().is_none(), "busy targets do not fire");
        advance(Duration::from_secs(10)).await;
        assert!(b.take_due(Instant::now()).is_empty());
        b.set_busy("cdn", false);
        let (due, at) = next(&mut b).await;
        assert_eq!(due, vec!["cdn"]);
        assert_eq!(
            at - start,
            Duration::from_secs(11),
            "due already: fires as soon as not busy"
        );
        assert!(b.next_deadline().is_none(), "one batch, not one per change");
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_batch_waits_but_never_past_max_delay() {
        let start = Instant::now();
        let mut b = Batcher::new();
        b.touch("cdn", D, Duration::from_secs(3), Instant::now());
        sleep_until(b.next_deadline().unwrap()).await;
        assert_eq!(b.due(Instant::now()), vec!["cdn"]);
        b.hold("cdn", Instant::now() + Duration::from_millis(500));
        assert!(b.due(Instant::now()).is_empty());
        let (due, at) = next(&mut b).await;
        assert_eq!(
            (due, at - start),
            (vec!["cdn".to_string()], Duration::from_millis(2500))
        );
        b.touch("cdn", D, Duration::from_secs(3), Instant::now());
        let first = Instant::now();
        for _ in 0..10 {
            sleep_until(b.next_deadline().unwrap()).await;
            b.hold("cdn", Instant::now() + Duration::from_secs(1));
        }
        assert_eq!(
            b.next_deadline(),
            Some(first + Duration::from_secs(3)),
            "max_delay still caps it"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn due_now_fires_immediately() {
        let start = Instant::now();
        let mut b = Batcher::new();
        b.due_now("www", Instant::now());
        let (due, at) = next(&mut b).await;
        assert_eq!((due, at), (vec!["www".to_string()], start));
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_batch_goes_when_released_and_an_open_one_is_left_alone() {
        let mut b = Batcher::new();
        let t0 = Instant::now();
        b.touch("a", D, MAX, t0);
        b.touch("b", D, MAX, t0 + Duration::from_millis(900));
        advance(D).await;
        let now = Instant::now();
        assert_eq!(b.due(now), vec!["a".to_string()]);
        b.hold("a", t0 + MAX);
        assert!(b.due(now).is_empty());
        let later = now + Duration::from_millis(50);
        b.release("a", later);
        b.release("b", later); // not held: keeps its own deadline
        assert_eq!(b.due(later), vec!["a".to_string()]);
        assert_eq!(b.next_deadline(), Some(later));
        b.close("a");
        assert_eq!(b.next_deadline(), Some(t0 + Duration::from_millis(900) + D));

        // A change during a hold starts a normal debounce from that change.
        b.hold("b", t0 + MAX);
        b.touch("b", D, MAX, later);
        assert_eq!(b.next_deadline(), Some(later + D));
    }
}

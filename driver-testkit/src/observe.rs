//! An observer of running flags, for tests of safety under failures. The verdicts come from the
//! instants the drivers recorded themselves ([`Flag::term_log`]): when each term's belief began
//! (just before the lease was published) and ended (just after it was withdrawn, or at its
//! deadline), on one clock for every flag. Whatever order the flags are read in, and however
//! late, two leaders at one instant is a fact about those instants, never about when somebody
//! looked.
//!
//! A thread also samples every flag every few milliseconds, as a second witness: its overlaps
//! (two flags read raised within one pass) are printed where the exact instants disagree,
//! never counted. A pass reads the flags one after another, so a sampler preempted between the
//! old leader and the new one sees a millisecond handover as two leaders.
//!
//! ```no_run
//! # fn demo(a: leadership_tokio::Flag, b: leadership_tokio::Flag) {
//! use leadership_driver_testkit::observe::Observer;
//! let observer = Observer::start();
//! observer.add("a", a);
//! observer.add("b", b);
//! // ... inflict the failure ...
//! let record = observer.finish();
//! assert!(record.overlaps().is_empty(), "{}", record.describe());
//! assert!(record.token_regressions().is_empty());
//! # }
//! ```
//!
//! What each check means:
//! - *overlap*: two terms of different processes whose recorded intervals intersect: one began
//!   before the other ended ([`Term::believed_until`]);
//! - *token regression*: a raise whose fencing token is not above the highest row version the
//!   same process had seen before it ([`leadership_tokio::TermRecord::seen_before`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use leadership_tokio::{lease_clock_ns, Flag, TermLog, TermRecord, WonBy};

/// How often the observer samples every flag (the second witness).
pub const PERIOD: Duration = Duration::from_millis(2);

/// A running observer; see the module docs.
pub struct Observer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    started: Instant,
    logs: Logs,
}

struct Shared {
    stop: AtomicBool,
    flags: Mutex<Vec<Watched>>,
    overlaps: Mutex<Vec<(Instant, Vec<String>)>>,
    longest_gap: Mutex<Duration>,
}

struct Watched {
    process: String,
    flag: Flag,
}

/// The lease clock read beside the test's `std` clock once: every recorded instant is placed
/// on the test's clock by the same shift, so the order of any two instants is kept exactly.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    at: Instant,
    ns: u64,
}

impl Clock {
    /// Reads both clocks now.
    pub fn now() -> Clock {
        Clock {
            ns: lease_clock_ns(),
            at: Instant::now(),
        }
    }

    /// The test-clock instant of a lease-clock reading.
    pub fn instant(&self, ns: u64) -> Instant {
        if ns >= self.ns {
            self.at + Duration::from_nanos(ns - self.ns)
        } else {
            self.at - Duration::from_nanos(self.ns - ns)
        }
    }

    /// A process's recorded term, placed on the test's clock.
    pub fn term(&self, process: &str, t: &TermRecord) -> Term {
        Term {
            process: process.to_string(),
            token: t.token,
            won_by: t.won_by,
            began: self.instant(t.began_ns),
            deadline: self.instant(t.deadline_ns),
            lowered: t.cleared_ns.map(|c| self.instant(c)),
            seen_before: t.seen_before,
            began_ns: t.began_ns,
            deadline_ns: t.deadline_ns,
            ended_ns: t.ended_ns(),
        }
    }
}

/// One term of one process, as its driver recorded it.
#[derive(Clone, Debug)]
pub struct Term {
    pub process: String,
    pub token: i64,
    pub won_by: WonBy,
    /// When the belief began (on the test's clock).
    pub began: Instant,
    /// The last published deadline of the term.
    pub deadline: Instant,
    /// When the lease was withdrawn (None: never, it ran to its deadline or is in progress).
    pub lowered: Option<Instant>,
    /// The highest row version the process had seen before this raise.
    pub seen_before: Option<i64>,
    /// When the belief began, on the lease clock: what verdicts compare.
    pub began_ns: u64,
    /// The last published deadline, on the lease clock.
    pub deadline_ns: u64,
    /// When the belief ended (or ends, unless renewed), on the lease clock.
    pub ended_ns: u64,
}

impl Term {
    /// Until when the process believed it led: the earlier of the last deadline and the
    /// withdrawal.
    pub fn believed_until(&self) -> Instant {
        self.lowered.map_or(self.deadline, |l| l.min(self.deadline))
    }

    /// Whether the process believed it led at lease-clock instant `ns`.
    pub fn covers(&self, ns: u64) -> bool {
        self.began_ns <= ns && ns < self.ended_ns
    }
}

/// The pairs of terms of different processes that were believed at one instant, with how long
/// (the verdict of every overlap test). Terms of one process never overlap each other (its
/// driver withdraws a term before publishing the next); the order of `terms` does not matter.
pub fn overlaps(terms: &[Term]) -> Vec<(Term, Term, Duration)> {
    let mut sorted: Vec<&Term> = terms.iter().collect();
    sorted.sort_by_key(|t| t.began_ns);
    let mut out = Vec::new();
    for (i, a) in sorted.iter().enumerate() {
        for b in &sorted[i + 1..] {
            if a.process != b.process && b.began_ns < a.ended_ns {
                let end = a.ended_ns.min(b.ended_ns);
                out.push((
                    (*a).clone(),
                    (*b).clone(),
                    Duration::from_nanos(end - b.began_ns),
                ));
            }
        }
    }
    out
}

/// The term logs of a set of flags, without a sampler: for tests that judge overlaps of flags
/// they crash or drop (a log outlives its flag).
#[derive(Clone)]
pub struct Logs {
    clock: Clock,
    logs: Arc<Mutex<Vec<(String, TermLog)>>>,
}

impl Default for Logs {
    fn default() -> Logs {
        Logs::new()
    }
}

impl Logs {
    /// No logs yet.
    pub fn new() -> Logs {
        Logs {
            clock: Clock::now(),
            logs: Arc::default(),
        }
    }

    /// The logs of `flags`, named `p0`, `p1`, … by position (`None`s skipped).
    pub fn of(flags: &[Option<Flag>]) -> Logs {
        let logs = Logs::new();
        for (i, f) in flags.iter().enumerate() {
            if let Some(f) = f {
                logs.add(&format!("p{i}"), f);
            }
        }
        logs
    }

    /// Adds `flag`'s log as `process`'s.
    pub fn add(&self, process: &str, flag: &Flag) {
        self.add_log(process, flag.term_log());
    }

    /// Adds a log as `process`'s.
    pub fn add_log(&self, process: &str, log: TermLog) {
        self.logs.lock().unwrap().push((process.to_string(), log));
    }

    /// Every term so far, in the order they began.
    pub fn terms(&self) -> Vec<Term> {
        let mut terms: Vec<Term> = self
            .logs
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(p, log)| {
                log.terms()
                    .iter()
                    .map(|t| self.clock.term(p, t))
                    .collect::<Vec<_>>()
            })
            .collect();
        terms.sort_by_key(|t| t.began_ns);
        terms
    }

    /// A record of the terms so far.
    pub fn record(&self) -> Record {
        Record::of_terms(self.terms(), self.clock.at, Instant::now())
    }

    /// Panics, describing the terms, if two processes believed they led at one instant or a
    /// raise's token was not above what its process had seen.
    pub fn assert_safe(&self) {
        let record = self.record();
        assert!(
            record.overlaps().is_empty(),
            "two leaders at one instant:\n{}",
            record.describe()
        );
        assert!(
            record.token_regressions().is_empty(),
            "a token not above what its process had seen:\n{}",
            record.describe()
        );
    }
}

impl Observer {
    /// Starts the observer (no flags yet).
    pub fn start() -> Observer {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            flags: Mutex::new(Vec::new()),
            overlaps: Mutex::new(Vec::new()),
            longest_gap: Mutex::new(Duration::ZERO),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("observer".into())
            .spawn(move || sample_loop(&s))
            .expect("spawning the observer thread");
        Observer {
            shared,
            thread: Some(thread),
            started: Instant::now(),
            logs: Logs::new(),
        }
    }

    /// Watches `flag` of `process`: every term its driver recorded, from its start.
    pub fn add(&self, process: &str, flag: Flag) {
        self.logs.add(process, &flag);
        self.shared.flags.lock().unwrap().push(Watched {
            process: process.to_string(),
            flag,
        });
    }

    /// The terms so far (finished and in progress), in the order they began.
    pub fn terms(&self) -> Vec<Term> {
        self.logs.terms()
    }

    /// Stops sampling and returns what was recorded.
    pub fn finish(mut self) -> Record {
        self.stop()
    }

    fn stop(&mut self) -> Record {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        drop(std::mem::take(&mut *self.shared.flags.lock().unwrap()));
        Record {
            started: self.started,
            ended: Instant::now(),
            terms: self.logs.terms(),
            sampled_overlaps: std::mem::take(&mut *self.shared.overlaps.lock().unwrap()),
            longest_gap: *self.shared.longest_gap.lock().unwrap(),
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop();
        }
    }
}

/// The second witness: which flags read raised in one pass.
fn sample_loop(s: &Shared) {
    let mut last = Instant::now();
    while !s.stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        let raised: Vec<String> = s
            .flags
            .lock()
            .unwrap()
            .iter()
            .filter(|w| w.flag.is_raised())
            .map(|w| w.process.clone())
            .collect();
        if raised.len() > 1 {
            s.overlaps.lock().unwrap().push((now, raised));
        }
        let gap = now - last;
        last = now;
        let mut longest = s.longest_gap.lock().unwrap();
        *longest = (*longest).max(gap);
        drop(longest);
        std::thread::sleep(PERIOD);
    }
}

/// What an [`Observer`] saw.
#[derive(Clone, Debug)]
pub struct Record {
    pub started: Instant,
    pub ended: Instant,
    /// Every term, in the order they began.
    pub terms: Vec<Term>,
    /// The second witness: sampled instants at which more than one process read raised (a
    /// handover between two reads of one pass shows here too; not a verdict).
    pub sampled_overlaps: Vec<(Instant, Vec<String>)>,
    /// The longest time between two samples (a starved sampler sees less).
    pub longest_gap: Duration,
}

impl Record {
    /// A record of `terms` alone, over `[started, ended)`.
    pub fn of_terms(terms: Vec<Term>, started: Instant, ended: Instant) -> Record {
        Record {
            started,
            ended,
            terms,
            sampled_overlaps: Vec::new(),
            longest_gap: Duration::ZERO,
        }
    }

    /// Pairs of terms of different processes believed at one instant, with the length of the
    /// overlap: the verdict ([`overlaps`]).
    pub fn overlaps(&self) -> Vec<(Term, Term, Duration)> {
        overlaps(&self.terms)
    }

    /// Sampled overlaps that the recorded instants do not confirm: handovers that fell between
    /// two reads of one pass.
    pub fn unconfirmed_samples(&self) -> Vec<(Instant, Vec<String>)> {
        let real = self.overlaps();
        self.sampled_overlaps
            .iter()
            .filter(|(_, who)| {
                !real
                    .iter()
                    .any(|(a, b, _)| who.contains(&a.process) && who.contains(&b.process))
            })
            .cloned()
            .collect()
    }

    /// Raises whose token was not above the highest version the process had seen before.
    pub fn token_regressions(&self) -> Vec<Term> {
        self.terms
            .iter()
            .filter(|t| t.seen_before.is_some_and(|s| t.token <= s))
            .cloned()
            .collect()
    }

    /// The first term that began at or after `at`.
    pub fn first_term_after(&self, at: Instant) -> Option<&Term> {
        self.terms.iter().find(|t| t.began >= at)
    }

    /// The term of `process` in progress at `at`, if any.
    pub fn term_at(&self, process: &str, at: Instant) -> Option<&Term> {
        self.terms
            .iter()
            .find(|t| t.process == process && t.began <= at && at < t.believed_until())
    }

    /// How long, within `[from, to)`, no process believed it led.
    pub fn leaderless(&self, from: Instant, to: Instant) -> Duration {
        let mut spans: Vec<(Instant, Instant)> = self
            .terms
            .iter()
            .map(|t| (t.began.max(from), t.believed_until().min(to)))
            .filter(|(a, b)| a < b)
            .collect();
        spans.sort();
        let mut covered = Duration::ZERO;
        let mut reach = from;
        for (a, b) in spans {
            if b > reach {
                covered += b - a.max(reach);
                reach = b;
            }
        }
        (to.saturating_duration_since(from)).saturating_sub(covered)
    }

    /// Every term, one a line, with times relative to `zero`; then the overlaps, and the
    /// sampled ones the instants do not confirm.
    pub fn describe_from(&self, zero: Instant) -> String {
        let ms = |t: Instant| {
            let d = if t >= zero {
                (t - zero).as_secs_f64()
            } else {
                -(zero - t).as_secs_f64()
            };
            format!("{:+.6}s", d)
        };
        let mut out = String::new();
        for t in &self.terms {
            out.push_str(&format!(
                "  {} token {} ({:?}) from {} until {} (deadline {}{}), saw up to {:?} before\n",
                t.process,
                t.token,
                t.won_by,
                ms(t.began),
                ms(t.believed_until()),
                ms(t.deadline),
                t.lowered
                    .map_or(String::new(), |l| format!(", withdrawn {}", ms(l))),
                t.seen_before,
            ));
        }
        for (a, b, d) in self.overlaps().iter().take(5) {
            out.push_str(&format!(
                "  OVERLAP: {} token {} and {} token {} for {d:?} from {}\n",
                a.process,
                a.token,
                b.process,
                b.token,
                ms(b.began)
            ));
        }
        for (at, who) in self.unconfirmed_samples().iter().take(5) {
            out.push_str(&format!(
                "  sampled as two leaders at {} ({who:?}), not confirmed by the recorded \
                 instants: a handover between two reads\n",
                ms(*at)
            ));
        }
        out.push_str(&format!(
            "  longest gap between samples {:?}\n",
            self.longest_gap
        ));
        out
    }

    /// [`describe_from`](Record::describe_from) the observer's start.
    pub fn describe(&self) -> String {
        self.describe_from(self.started)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term(process: &str, token: i64, began_ns: u64, ended_ns: u64) -> Term {
        let clock = Clock {
            at: Instant::now(),
            ns: 0,
        };
        clock.term(
            process,
            &TermRecord {
                token,
                won_by: WonBy::TookOver,
                began_ns,
                deadline_ns: ended_ns + 1_000_000_000,
                cleared_ns: Some(ended_ns),
                seen_before: None,
            },
        )
    }

    /// The verdict does not depend on the order in which the processes are read: a lowering
    /// 1 µs before the next raise is a handover, a raise 1 µs before the other's lowering is
    /// an overlap of 1 µs.
    #[test]
    fn the_verdict_comes_from_the_instants_whichever_process_is_read_first() {
        let us = 1_000;
        let old = term("old", 1, 1_000_000, 5_000_000);
        let next = term("next", 2, 5_000_000 + us, 9_000_000);
        for terms in [vec![old.clone(), next.clone()], vec![next, old.clone()]] {
            assert!(overlaps(&terms).is_empty(), "{terms:?}");
        }
        let early = term("next", 2, 5_000_000 - us, 9_000_000);
        for terms in [vec![old.clone(), early.clone()], vec![early, old]] {
            let found = overlaps(&terms);
            assert_eq!(found.len(), 1, "{terms:?}");
            assert_eq!(found[0].2, Duration::from_micros(1));
            assert_eq!((found[0].0.token, found[0].1.token), (1, 2));
        }
        // A term ends at its deadline when it is never withdrawn.
        let lapsed = Term {
            lowered: None,
            ended_ns: 3_000_000,
            ..term("lapsed", 3, 1_000_000, 3_000_000)
        };
        assert!(overlaps(&[lapsed.clone(), term("next", 4, 3_000_000, 4_000_000)]).is_empty());
        assert_eq!(
            overlaps(&[lapsed, term("next", 4, 2_999_999, 4_000_000)]).len(),
            1
        );
    }

    /// A sampled overlap that the instants do not confirm is reported as such, not counted.
    #[test]
    fn a_sample_that_straddles_a_handover_is_a_witness_not_a_verdict() {
        let old = term("old", 1, 1_000_000, 5_000_000);
        let next = term("next", 2, 5_000_001, 9_000_000);
        let mut record = Record::of_terms(vec![old, next], Instant::now(), Instant::now());
        record
            .sampled_overlaps
            .push((Instant::now(), vec!["old".into(), "next".into()]));
        assert!(record.overlaps().is_empty());
        assert_eq!(record.unconfirmed_samples().len(), 1);
        assert!(record.describe().contains("not confirmed"));
    }
}

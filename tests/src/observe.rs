//! An observer of running flags, for tests of safety under failures: a thread samples every
//! flag every few milliseconds and records each process's terms (token, when it was first seen
//! raised, until when it believed it led), every sampled instant at which two processes believed
//! at once, and the highest row version each process had seen before each of its raises.
//!
//! ```no_run
//! # fn demo(a: leadership_tokio::Flag, b: leadership_tokio::Flag) {
//! use leadership_testkit::observe::Observer;
//! let observer = Observer::start();
//! observer.add("a", a);
//! observer.add("b", b);
//! // ... inflict the failure ...
//! let record = observer.finish();
//! assert!(record.sampled_overlaps.is_empty(), "{}", record.describe());
//! assert!(record.deadline_overlaps().is_empty());
//! assert!(record.token_regressions().is_empty());
//! # }
//! ```
//!
//! What each check means:
//! - *sampled overlap*: at one instant, two flags' [`Flag::is_raised`] were true (both read
//!   within one sample, microseconds apart);
//! - *deadline overlap*: a term began (first sample that saw it) before another process's
//!   earlier term had ended, a term ending at the earlier of its last published deadline and the
//!   first sample that saw it lowered: this catches an overlap shorter than the sampling period
//!   too, as long as the earlier leader had not been seen lowering;
//! - *token regression*: a raise whose fencing token is not above the highest row version the
//!   same process had seen before (through its own leases and [`Flag::current_holder`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use leadership_tokio::{Flag, WonBy};

/// How often the observer samples every flag.
pub const PERIOD: Duration = Duration::from_millis(2);

/// A running observer; see the module docs.
pub struct Observer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    started: Instant,
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
    /// The term in progress.
    current: Option<Term>,
    terms: Vec<Term>,
    /// The highest row version this process is known to have seen.
    seen: Option<i64>,
}

/// One term of one process, as observed.
#[derive(Clone, Debug)]
pub struct Term {
    pub process: String,
    pub token: i64,
    pub won_by: WonBy,
    /// The first sample that saw it raised.
    pub began: Instant,
    /// The last published deadline of the term.
    pub deadline: Instant,
    /// The first sample that saw it no longer raised (None: still raised at the end).
    pub lowered: Option<Instant>,
    /// The highest row version the process had been seen to see before this raise.
    pub seen_before: Option<i64>,
}

impl Term {
    /// Until when the process believed it led: the earlier of the last deadline and the first
    /// sample that saw it lowered.
    pub fn believed_until(&self) -> Instant {
        self.lowered.map_or(self.deadline, |l| l.min(self.deadline))
    }
}

impl Observer {
    /// Starts sampling (no flags yet).
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
        }
    }

    /// Watches `flag` of `process` from now on.
    pub fn add(&self, process: &str, flag: Flag) {
        self.shared.flags.lock().unwrap().push(Watched {
            process: process.to_string(),
            flag,
            current: None,
            terms: Vec::new(),
            seen: None,
        });
    }

    /// The terms so far (finished and in progress), in the order they began.
    pub fn terms(&self) -> Vec<Term> {
        collect_terms(&self.shared.flags.lock().unwrap())
    }

    /// Stops sampling and returns what was seen.
    pub fn finish(mut self) -> Record {
        self.stop()
    }

    fn stop(&mut self) -> Record {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let flags = std::mem::take(&mut *self.shared.flags.lock().unwrap());
        Record {
            started: self.started,
            ended: Instant::now(),
            terms: collect_terms(&flags),
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

fn collect_terms(flags: &[Watched]) -> Vec<Term> {
    let mut terms: Vec<Term> = flags
        .iter()
        .flat_map(|w| w.terms.iter().chain(w.current.iter()).cloned())
        .collect();
    terms.sort_by_key(|t| t.began);
    terms
}

fn sample_loop(s: &Shared) {
    let mut last = Instant::now();
    while !s.stop.load(Ordering::SeqCst) {
        let mut flags = s.flags.lock().unwrap();
        let mut raised = Vec::new();
        let now = Instant::now();
        for w in flags.iter_mut() {
            // The holder first: it is published after the raise it brought, so a raise read
            // after it is never missed.
            let holder = w.flag.current_holder().and_then(|h| h.version);
            let lease = w.flag.lease();
            let now = Instant::now();
            match (lease, &mut w.current) {
                (Some(l), Some(t)) if t.token == l.token => t.deadline = t.deadline.max(l.deadline),
                (lease, current) => {
                    if let Some(mut t) = current.take() {
                        t.lowered = Some(now);
                        w.terms.push(t);
                    }
                    if let Some(l) = lease {
                        w.current = Some(Term {
                            process: w.process.clone(),
                            token: l.token,
                            won_by: l.won_by,
                            began: now,
                            deadline: l.deadline,
                            lowered: None,
                            seen_before: w.seen,
                        });
                    }
                }
            }
            if lease.is_some() {
                raised.push(w.process.clone());
            }
            w.seen = w.seen.max(holder).max(lease.map(|l| l.version));
        }
        drop(flags);
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
    /// Sampled instants at which more than one process believed it led, and which.
    pub sampled_overlaps: Vec<(Instant, Vec<String>)>,
    /// The longest time between two samples (a starved observer sees less).
    pub longest_gap: Duration,
}

impl Record {
    /// Pairs of terms of different processes where the later began before the earlier ended
    /// ([`Term::believed_until`]), with the length of the overlap.
    pub fn deadline_overlaps(&self) -> Vec<(Term, Term, Duration)> {
        let mut out = Vec::new();
        for (i, a) in self.terms.iter().enumerate() {
            for b in &self.terms[i + 1..] {
                if a.process != b.process && b.began < a.believed_until() {
                    out.push((a.clone(), b.clone(), a.believed_until() - b.began));
                }
            }
        }
        out
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

    /// Every term, one a line, with times relative to `zero`.
    pub fn describe_from(&self, zero: Instant) -> String {
        let ms = |t: Instant| {
            let d = if t >= zero {
                (t - zero).as_secs_f64()
            } else {
                -(zero - t).as_secs_f64()
            };
            format!("{:+.3}s", d)
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
                    .map_or(String::new(), |l| format!(", seen lowered {}", ms(l))),
                t.seen_before,
            ));
        }
        for (at, who) in self.sampled_overlaps.iter().take(5) {
            out.push_str(&format!("  OVERLAP at {}: {who:?}\n", ms(*at)));
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

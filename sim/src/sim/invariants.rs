//! The invariants, checked after every event (see `World::check` in `world.rs`):
//!
//! - **one leader**: at no event instant do two Rust processes answer
//!   `is_leader(local_now) == true`. Leadership only begins at an event (a reply handled),
//!   so checking every event instant checks every instant. Every process that is up is asked,
//!   paused ones included: a paused process resumes with the belief it had.
//! - **fencing**: each `Raise` carries a token larger than every earlier one.
//! - **the Go rule**: a Rust check never takes over a row whose lease is live by the Go
//!   flag's rule (`now - timestamp <= interval`).
//! - **liveness**: once no fault has been active for longer than a lease plus a check (plus
//!   a retry), someone leads at every instant (in a fleet with Go peers: no leaderless
//!   stretch lasts that long, since the Go flag may let its own lease lapse).
//! - **work stops first**: no process leads while the leader-only work of another runs (see
//!   [`Work`](super::process::Work)): work runs until it has ended, by its own stop or by the
//!   kill at its lease's deadline, whatever its process believes.
//! - **handover** (when asked): after a graceful release, another process leads within one
//!   check.

use leadership_core::{Instant, Lease};

use super::clock::db_time;
use super::process::{Host, RustProc};
use super::trace::{Pid, What};
use super::world::World;
use super::Safeguards;
use crate::violation::{Quiet, Violation};

impl Safeguards {
    /// The judge's rule of who leads, for the simulator and the model check alike: a process
    /// that is up leads while its core holds a lease at its local time `local`; with a
    /// safeguard switched off, while the belief that safeguard would have ended lasts
    /// (`believed`, raised at a renew's reply until `believed_until` by its clock). Returns
    /// whether it leads and until when (by its clock) unless something changes.
    pub fn leads(
        &self,
        lease: Option<Lease>,
        believed: bool,
        believed_until: Instant,
        local: Instant,
    ) -> (bool, Option<Instant>) {
        if !self.local_deadline {
            return (believed, None);
        }
        if !self.deadline_from_send {
            let lead = believed && local < believed_until;
            return (lead, lead.then_some(believed_until));
        }
        match lease {
            Some(lease) => (true, Some(lease.deadline)),
            None => (false, None),
        }
    }
}

/// The judge: evaluated after every event.
impl World {
    /// Judges one Rust process at the current instant: whether it leads, and until when (by
    /// its clock) unless something changes.
    pub(super) fn leads(&self, r: &RustProc) -> (bool, Option<Instant>) {
        if !r.host.up {
            return (false, None); // a crashed process believes nothing
        }
        let local = r.host.clock.local(self.t);
        let lease = r.flag.as_ref().and_then(|f| f.lease_at(local));
        self.config
            .safeguards
            .leads(lease, r.belief.held, r.belief.until, local)
    }

    pub(super) fn check(&mut self) {
        let previous = self.last_check;
        self.last_check = self.t;
        self.stats.invariant_checks += 1;
        for f in 0..self.flags {
            self.check_flag(f, previous);
            if self.violation.is_some() {
                return;
            }
        }
    }

    /// Judges flag `f`'s row: the cores that run it (one per Rust process), and the Go
    /// processes on the first flag's.
    fn check_flag(&mut self, f: usize, previous: u64) {
        let t = self.t;
        let mut first: Option<usize> = None;
        let mut rust_leaders = 0;
        // When the last leader stopped: a deadline passes between events, at a known instant.
        let mut ended = t;
        for i in (f..self.rust.len()).step_by(self.flags) {
            let (lead, until) = self.leads(&self.rust[i]);
            if lead != self.rust[i].leads {
                let r = &mut self.rust[i];
                r.leads = lead;
                let at = match (lead, r.lead_until) {
                    (false, Some(deadline)) if r.host.clock.local(t) >= deadline => {
                        r.host.clock.true_at(deadline, previous).min(t)
                    }
                    _ => t,
                };
                if !lead {
                    ended = at;
                }
                self.trace.push(at, i as Pid, What::Leads(lead));
                if lead {
                    // The next leader ends the handover; it counts if it is another process
                    // (the releaser may have come back and won first).
                    if let Some((since, from)) = self.rows[f].handover_since.take() {
                        if usize::from(from) != i {
                            self.stats.handovers.push(t - since);
                        }
                    }
                }
            }
            self.rust[i].lead_until = until;
            if lead {
                rust_leaders += 1;
                match first {
                    None => first = Some(i),
                    Some(a) => {
                        // Named as in the trace (twins share a holder name).
                        self.violation = Some(Violation::TwoLeaders {
                            a: self.trace.names()[a].clone(),
                            b: self.trace.names()[i].clone(),
                        });
                        return;
                    }
                }
            }
        }
        if let Some(leader) = first {
            let mut cores = (f..self.rust.len()).step_by(self.flags);
            if let Some(worker) = cores.find(|&j| j != leader && self.work_runs(j)) {
                self.violation = Some(Violation::WorkStillRunning {
                    leader: self.trace.names()[leader].clone(),
                    worker: self.trace.names()[worker].clone(),
                });
                return;
            }
        }
        let go_leaders = match f {
            0 => self.go.iter().filter(|g| g.host.up && g.raised).count(),
            _ => 0,
        };
        if go_leaders > 0 {
            // A Go process took the released flag: that is a handover too.
            if let Some((since, _)) = self.rows[f].handover_since.take() {
                self.stats.handovers.push(t - since);
            }
        }
        // Go overlaps are the Go flag's known window: measured, not a violation.
        match (go_leaders >= 2, self.go_overlap_since) {
            (true, None) => self.go_overlap_since = Some(t),
            (false, Some(since)) => {
                self.stats.go_overlaps.push(t - since);
                self.go_overlap_since = None;
            }
            _ => {}
        }
        match (go_leaders >= 1 && rust_leaders >= 1, self.rust_go_since) {
            (true, None) => self.rust_go_since = Some(t),
            (false, Some(since)) => {
                self.stats.rust_go_overlap_ns += t - since;
                self.rust_go_since = None;
            }
            _ => {}
        }
        let anyone = rust_leaders + go_leaders > 0;
        let row = &mut self.rows[f];
        match (anyone, row.leaderless_since) {
            (true, Some(since)) => {
                if !row.led {
                    row.led = true;
                    self.stats.first_leader_ns.get_or_insert(t);
                } else {
                    self.stats.leaderless_ns += t - since;
                    self.stats.gaps.push(t - since);
                }
                row.leaderless_since = None;
            }
            (false, None) => row.leaderless_since = Some(ended),
            _ => {}
        }
        if !anyone {
            // A Rust fleet keeps its leader through quiet times, so nobody leading at any
            // instant after the window is a failure. The Go flag may let its own lease lapse
            // (with jitter 1 it renews a whole interval after reading `now()`), so with Go
            // peers only a leaderless stretch longer than the window is.
            let from = if self.go.is_empty() {
                self.quiet_since
            } else {
                self.quiet_since
                    .max(self.rows[f].leaderless_since.unwrap_or(t))
            };
            if t > from + self.liveness_window {
                self.violation = Some(Violation::NoLeader {
                    quiet: Quiet::Nanos(t - self.quiet_since),
                });
                return;
            }
        }
        if self.config.assert_handover {
            if let Some((since, _)) = self.rows[f].handover_since {
                let bound = self.core_configs[0].renew_interval().as_nanos() as u64;
                if t > since + bound {
                    self.violation = Some(Violation::SlowHandover { waited: t - since });
                }
            }
        }
    }

    /// Whether process `j`'s leader-only work runs now (see [`Work`](super::process::Work)).
    pub(super) fn work_runs(&self, j: usize) -> bool {
        self.rust[j].work.is_some()
    }

    /// Rust process `who` won a check that displaced `holder` (a process id, if the row
    /// names one of ours) whose lease was `age` µs old by the database's clock: it must have
    /// expired by the Go rule (`now - timestamp > interval`).
    pub(super) fn judge_takeover(&mut self, who: Pid, holder: Option<usize>, age: i64) {
        let holder_name =
            |w: &World| holder.map_or("(unknown)".to_string(), |h| w.host_ref(h).name.clone());
        if age <= self.interval_ns as i64 / 1_000 && self.violation.is_none() {
            self.violation = Some(Violation::TookLiveLease {
                who: self.host_ref(usize::from(who)).name.clone(),
                holder: holder_name(self),
                age_micros: age,
            });
        }
        if let Some(h) = holder.filter(|&h| h >= self.rust.len()) {
            let g = &self.go[h - self.rust.len()];
            if g.host.up && g.raised {
                self.stats.took_from_raised_go += 1;
            }
        }
    }

    /// One line per process: what the judge needs to explain a failure.
    pub(super) fn describe_processes(&self) -> String {
        use std::fmt::Write as _;
        let t = self.t;
        let mut out = String::new();
        for (i, r) in self.rust.iter().enumerate() {
            let h = &r.host;
            let local = h.clock.local(t);
            let _ = write!(
                out,
                "{}: {}, clock {:+} ppm",
                self.trace.names()[i],
                run_state(h, t),
                h.clock.ppm()
            );
            match r.flag.as_ref().and_then(|f| f.lease_at(local)) {
                Some(lease) => {
                    let left = lease.deadline - local;
                    let _ = write!(
                        out,
                        ", leads (token {}, version {}) for {:.3} ms more by its clock",
                        lease.token,
                        lease.version,
                        left.as_secs_f64() * 1e3
                    );
                }
                None => out.push_str(", does not lead"),
            }
            if self.rust[i].leads != r.flag.as_ref().is_some_and(|f| f.is_leader(local)) {
                let _ = write!(out, " (judged: leads = {})", self.rust[i].leads);
            }
            out.push('\n');
        }
        for g in &self.go {
            let _ = writeln!(
                out,
                "{}: {}, clock {:+} ppm, Raised() = {}",
                g.host.name,
                run_state(&g.host, t),
                g.host.clock.ppm(),
                g.raised
            );
        }
        for row in &self.rows {
            let lock = match t < row.locked_until {
                true => format!(
                    ", locked by another transaction until {}",
                    super::trace::Secs(row.locked_until)
                ),
                false => String::new(),
            };
            let _ = writeln!(
                out,
                "db: {} {:?}{lock}, now {:?}",
                if self.flags == 1 { "row" } else { &row.name },
                self.table.get(&row.name),
                db_time(t + self.db_offset)
            );
        }
        out
    }
}

fn run_state(h: &Host, t: u64) -> String {
    if !h.up {
        "down".to_string()
    } else if h.paused(t) {
        format!("paused until {}", super::trace::Secs(h.paused_until))
    } else {
        "running".to_string()
    }
}

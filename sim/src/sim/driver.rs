//! The modelled drivers: a Rust process's loop (feed the core, carry out its commands, arm its
//! timer) and the Go model's timer.

use leadership_core::{Command, Failure as CoreFailure, Input, WonBy};

use super::clock::db_time;
use super::go_model::GoNext;
use super::process::{Core, Reply, Work};
use super::trace::{Op, Pid, What};
use super::world::{Ev, World};
use crate::belief::Belief;
use crate::check::Check;
use crate::violation::Violation;

/// How often the leader-only work takes long to stop (up to 1.5 leases), in ppm.
const WORK_LONG_PPM: u64 = 200_000;
/// The longest a quick stop takes (ns).
const WORK_SHORT_MAX: u64 = 50_000_000;
/// A killed work is gone after 0.1 ms to this (ns): the kernel tears its process group down
/// (the margin must cover it, beside the clock drift).
const KILL_LATENCY_MAX: u64 = 2_000_000;

impl World {
    pub(super) fn start(&mut self, p: Pid) {
        let t = self.t;
        self.host(p).up = true;
        self.trace.push(t, p, What::Start);
        if self.is_rust(p) {
            let i = usize::from(p);
            let seed = self.rng.next_u64();
            let local = self.rust[i].host.clock.local(t);
            let proc_ = &mut self.rust[i];
            proc_.flag = Some(Core::new(
                self.core_configs[i].clone(),
                seed,
                local,
                self.config.audit,
            ));
            proc_.belief = Belief::NONE;
            proc_.observed = None;
            proc_.saw_row = false;
            proc_.joined = None;
            self.drain(p);
        } else {
            let g = self.go_mut(p);
            g.start();
            let next = g.on_timer();
            self.go_act(p, next);
        }
    }

    /// Hands an input to a Rust core and carries out what it says.
    pub(super) fn feed(&mut self, p: Pid, input: Input<'_>) {
        let i = usize::from(p);
        let local = self.rust[i].host.clock.local(self.t);
        let Some(flag) = &mut self.rust[i].flag else {
            return;
        };
        if let Err(e) = flag.handle_input(local, input) {
            self.violation = Some(Violation::Contract {
                who: self.rust[i].host.name.clone(),
                error: e.to_string(),
            });
            return;
        }
        self.drain(p);
    }

    pub(super) fn deliver(&mut self, p: Pid, reply: Reply) {
        if !self.is_rust(p) {
            let (interval, jitter) = (self.config.interval, self.config.jitter);
            let next = self.go_mut(p).on_reply(reply, interval, jitter);
            return self.go_act(p, next);
        }
        match reply {
            Reply::Check(result) => {
                // What the process has seen, for judging its tokens: a row it won counts
                // after the raise it brings is judged.
                let version = result.row.as_ref().and_then(|row| row.version);
                let i = usize::from(p);
                self.rust[i].saw_row = result.row.is_some();
                if !result.won {
                    self.rust[i].observed = self.rust[i].observed.max(version);
                }
                self.feed(p, Input::Checked(result.as_input()));
                self.rust[i].observed = self.rust[i].observed.max(version);
            }
            Reply::Connected(server) => {
                self.rust[usize::from(p)].host.known_timeline = server.timeline.unwrap_or(0);
                self.feed(p, Input::Connected(server))
            }
            Reply::Released(released) => self.feed(p, Input::Released { released }),
            Reply::Error => self.feed(p, Input::Failed(CoreFailure::Error)),
            Reply::NotAttempted => self.feed(p, Input::Failed(CoreFailure::NotAttempted)),
            other => unreachable!("a Rust process got {other:?}"),
        }
    }

    /// Drains a Rust core's commands, carries them out, and re-arms its timer.
    pub(super) fn drain(&mut self, p: Pid) {
        let t = self.t;
        let i = usize::from(p);
        let mut commands = std::mem::take(&mut self.commands);
        loop {
            commands.clear();
            let Some(flag) = &mut self.rust[i].flag else {
                break;
            };
            while let Some(c) = flag.poll_command() {
                commands.push(c);
            }
            if commands.is_empty() {
                break;
            }
            let mut precheck = false;
            let mut stop_work = false;
            let mut raised = false;
            for c in &commands {
                match *c {
                    Command::Check { .. } => {
                        self.stats.checks += 1;
                        let check = Check::from_command(c).expect("a check");
                        let op = Op::Check(check.as_sent(&self.config.safeguards));
                        self.emit(p, op);
                    }
                    Command::Release { version } => {
                        self.stats.releases += 1;
                        self.emit(p, Op::Release { version });
                    }
                    Command::RunPrecheck => precheck = true,
                    Command::StopWork => stop_work = true,
                    Command::AtRisk(_) => {
                        self.stats.at_risk += 1;
                        self.trace.push(t, p, What::AtRisk);
                        if self.config.safeguards.at_risk_stop {
                            self.term_work(p);
                        }
                    }
                    Command::Raise(lease) => {
                        self.stats.raises += 1;
                        if lease.won_by == WonBy::TookOver {
                            self.stats.takeovers += 1;
                        }
                        self.trace
                            .push(t, p, What::Raise(lease.token, lease.won_by));
                        let f = self.flag_of(p);
                        let name = &self.rust[i].host.name;
                        if let Err(v) = self.rows[f].tokens.raise(name, lease.token) {
                            self.violation.get_or_insert(v);
                        }
                        // The row this term's check wrote names the term, for its fence.
                        let name = &self.rust[i].host.name;
                        let row = self.table.get(&self.rows[f].name).filter(|r| {
                            r.holder.as_deref() == Some(name.as_str())
                                && r.version == Some(lease.version)
                        });
                        if let Some(term) = row.map(|r| r.term) {
                            if term != Some(lease.token) && self.violation.is_none() {
                                self.violation = Some(Violation::TermNotInRow {
                                    who: name.clone(),
                                    token: lease.token,
                                    term,
                                });
                            }
                        }
                        self.new_deadline(p, lease.deadline);
                        self.believe(p);
                        raised = true;
                    }
                    Command::Renewed(lease) => {
                        self.stats.renewals += 1;
                        self.trace.push(t, p, What::Renewed(lease.version));
                        self.new_deadline(p, lease.deadline);
                        self.believe(p);
                    }
                    Command::Lower(reason) => {
                        self.trace.push(t, p, What::Lower(reason));
                        self.rust[i]
                            .belief
                            .lowered(reason, self.config.safeguards.deadline_from_send);
                        self.term_work(p);
                    }
                    Command::Anomaly(a) => {
                        self.stats.anomalies += 1;
                        self.trace.push(t, p, What::Anomaly(a));
                        if a == leadership_core::Anomaly::LostWrites && self.history_lost {
                            // The vanished-row rule takes nothing for a lease from the instant
                            // a process *notices* the loss, and one that was paused or cut off
                            // when the row vanished notices only once it is back: the fault
                            // ends for liveness then, not at the DELETE or the failover.
                            self.quiet_until(t);
                        }
                    }
                    Command::Closed => {
                        // The process exits once every flag of its set has closed.
                        let last = self.siblings(p).all(|c| c == i || !self.rust[c].host.up);
                        let down = last.then(|| {
                            self.rng.between(
                                self.config
                                    .faults
                                    .close
                                    .map_or(0, |s| s.min.as_nanos() as u64),
                                self.config
                                    .faults
                                    .close
                                    .map_or(0, |s| s.max.as_nanos() as u64),
                            )
                        });
                        if let Some(down) = down {
                            self.trace.push(t, p, What::Closed(t + down));
                            self.quiet_until(t + down);
                        }
                        // The tool exits: a command still running (told to stop when leadership
                        // ended, not yet gone) is killed with it (the watchdog's closed input).
                        if let Some(mut w) = self.rust[i].work {
                            if w.dies_at.is_none() {
                                let latency = self.rng.between(100_000, KILL_LATENCY_MAX);
                                w.dies_at = Some(t + latency);
                                self.rust[i].work = Some(w);
                                self.push(t + latency, Ev::WorkEnds { p, work: w.id });
                            }
                        }
                        let r = &mut self.rust[i];
                        r.host.die();
                        r.flag = None;
                        r.belief.end();
                        if let Some(down) = down {
                            for c in self.siblings(p) {
                                self.push(t + down, Ev::Start(c as Pid));
                            }
                        }
                    }
                }
            }
            if raised {
                self.start_work(p);
            }
            if stop_work {
                self.stop_work(p);
            }
            if precheck {
                // The user's function runs on the process for up to a millisecond.
                let inc = self.rust[i].host.inc;
                let d = self.rng.below(1_000_000);
                self.push(t + d, Ev::Precheck { p, inc });
            }
        }
        self.commands = commands;
        self.rearm(p);
        let broken = self.rust[i].flag.as_ref().and_then(Core::broken);
        if let (Some(b), None) = (broken, &self.violation) {
            self.violation = Some(Violation::CorePromise {
                who: self.rust[i].host.name.clone(),
                what: b.to_string(),
            });
        }
    }

    /// Carries out a statement the core asked for: sends it now, or, in batch mode, queues
    /// it for its set's driver (sent at the end of the instant, `batch.rs`). With the
    /// `join-before-send` safeguard off, the renew a batch already carries for this core,
    /// unknown to it until the batch returns, is not queued again.
    fn emit(&mut self, p: Pid, op: Op) {
        if !self.config.batch {
            return self.send(p, op, db_time(0));
        }
        if let (Some((q, sent)), Op::Check(check)) = (self.swallow, op) {
            if q == p && sent == check {
                self.swallow = None;
                self.swallowed = true;
                return;
            }
        }
        let set = usize::from(p) / self.flags;
        self.sets[set].outbox.push((p, op));
    }

    /// A term began: its work starts, unless the work of an earlier term is still ending (the
    /// supervisor waits for it; [`World::work_ends`] starts the next one then).
    fn start_work(&mut self, p: Pid) {
        let t = self.t;
        let r = &mut self.rust[usize::from(p)];
        if r.work.is_none() {
            let local = r.host.clock.local(t);
            let token = r
                .flag
                .as_ref()
                .and_then(|f| f.lease_at(local))
                .map(|l| l.token);
            r.works += 1;
            let work = r.works;
            r.work = Some(Work {
                id: work,
                stops_at: None,
                dies_at: None,
                token,
            });
            if let Some(every) = self.config.effects {
                self.push(t + every.as_nanos() as u64, Ev::EffectTick { p, work });
            }
        }
    }

    /// The work `work` of process `p` sends a transaction of its term, if it still runs.
    pub(super) fn effect_tick(&mut self, p: Pid, work: u64) {
        let t = self.t;
        let i = usize::from(p);
        let Some(w) = self.rust[i].work.filter(|w| w.id == work) else {
            return; // that work has ended
        };
        let every = self.config.effects.map_or(0, |e| e.as_nanos() as u64);
        self.push(t + every.max(1), Ev::EffectTick { p, work });
        let (Some(token), true) = (w.token, !self.rust[i].host.paused(t)) else {
            return;
        };
        let Some(mut delay) = self.latency() else {
            return; // lost on its way: never committed
        };
        if self.rng.chance_ppm(50_000) {
            // A congested link holds it, in order, then delivers it.
            delay += self.rng.below(2 * self.config.interval.as_nanos() as u64);
        }
        let fenced = self.config.safeguards.fence;
        let timeline = self.timeline;
        self.push(
            t + delay,
            Ev::EffectLands {
                p,
                token,
                fenced,
                timeline,
            },
        );
    }

    /// The lease's deadline moved (raise, renew): the kill waits for the new one.
    fn new_deadline(&mut self, p: Pid, deadline: leadership_core::Instant) {
        let t = self.t;
        let r = &mut self.rust[usize::from(p)];
        r.lease_deadline = deadline;
        r.deadline_gen += 1;
        let gen = r.deadline_gen;
        let at = r.host.clock.true_at(deadline, t);
        self.push(at, Ev::WorkDeadline { p, gen });
    }

    /// SIGTERM: the work winds down for a while drawn by the seed: mostly quickly, sometimes
    /// longer than the lease. With the at-risk stop off, the old `run`: it is killed a grace
    /// (the stop-ahead) after being told, instead of at the deadline.
    fn term_work(&mut self, p: Pid) {
        let t = self.t;
        let i = usize::from(p);
        let Some(w) = self.rust[i].work else { return };
        if w.stops_at.is_some() {
            return;
        }
        let long = self.rng.chance_ppm(WORK_LONG_PPM);
        let most = if long {
            self.interval_ns * 3 / 2
        } else {
            WORK_SHORT_MAX
        };
        let delay = self.rng.below(most).max(1);
        self.stats.work_stops += 1;
        let mut w = w;
        w.stops_at = Some(t + delay);
        if !self.config.safeguards.at_risk_stop {
            let grace = self.core_configs[i].stop_ahead().as_nanos() as u64;
            let latency = self.rng.between(100_000, KILL_LATENCY_MAX);
            w.dies_at = Some(w.dies_at.unwrap_or(u64::MAX).min(t + grace + latency));
        }
        self.rust[i].work = Some(w);
        self.trace.push(t, p, What::StopWork(t + delay));
        let ends = w.ends_at().expect("just set");
        self.push(ends, Ev::WorkEnds { p, work: w.id });
        // Handing the flag over waits for the work, on purpose: no leader meanwhile.
        let bound = (ends - t).min(self.interval_ns);
        self.quiet_until(t + bound);
    }

    /// `StopWork`: a release waits for the work to end. With the `release-after-work`
    /// safeguard off, the driver tells the core at once that it has, as a driver without
    /// guards would.
    fn stop_work(&mut self, p: Pid) {
        self.term_work(p);
        if self.rust[usize::from(p)].work.is_none() || !self.config.safeguards.release_after_work {
            // Inside `drain`: its loop carries out what the core says next.
            self.tell_work_stopped(p, false);
        }
    }

    /// The deadline of the lease numbered `gen` has come: the work is killed (SIGKILL) if it
    /// still runs: by the supervisor, or by the watchdog while the supervisor is paused.
    pub(super) fn work_deadline(&mut self, p: Pid, gen: u64) {
        let t = self.t;
        let i = usize::from(p);
        let r = &self.rust[i];
        if !r.host.up || r.deadline_gen != gen || !self.config.safeguards.at_risk_stop {
            return;
        }
        let Some(w) = r.work else { return };
        if w.dies_at.is_some() || r.host.clock.local(t) < r.lease_deadline {
            // Killed already, or an event aimed before its clock changed: the one aimed
            // after the change comes at the deadline.
            return;
        }
        if r.host.paused(t) && !self.config.safeguards.watchdog {
            // No watchdog: the supervisor's own timer fires when it runs again.
            let until = r.host.paused_until;
            return self.push(until, Ev::WorkDeadline { p, gen });
        }
        let latency = self.rng.between(100_000, KILL_LATENCY_MAX);
        let mut w = w;
        w.dies_at = Some(t + latency);
        self.rust[i].work = Some(w);
        self.stats.work_killed += 1;
        self.trace.push(t, p, What::KillWork);
        self.push(t + latency, Ev::WorkEnds { p, work: w.id });
        if !self.config.safeguards.no_release_while_working && !self.rust[i].host.paused(t) {
            // The old core's bound: the release goes out now, the kill still in progress.
            self.tell_work_stopped(p, true);
        }
    }

    /// The work numbered `work` has ended if its time has come: it no longer runs. The
    /// supervisor learns of it (and tells the core) when it runs; a new term's work starts if
    /// the process leads again meanwhile.
    pub(super) fn work_ends(&mut self, p: Pid, work: u64) {
        let t = self.t;
        let i = usize::from(p);
        let Some(w) = self.rust[i].work else { return };
        if w.id != work || w.ends_at().is_none_or(|at| at > t) {
            return; // ended by a crash, or rescheduled
        }
        self.rust[i].work = None;
        self.trace.push(t, p, What::WorkStopped);
        let inc = self.rust[i].host.inc;
        self.push(t, Ev::Reaped { p, inc });
        let local = self.rust[i].host.clock.local(t);
        let leads = self.rust[i].flag.as_ref().and_then(|f| f.lease_at(local));
        if self.rust[i].host.up
            && !self.rust[i].host.paused(t)
            && leads.is_some_and(|l| !l.is_at_risk(local))
        {
            self.start_work(p);
        }
    }

    pub(super) fn tell_work_stopped(&mut self, p: Pid, drain: bool) {
        let i = usize::from(p);
        if !self.rust[i].host.up {
            return;
        }
        let local = self.rust[i].host.clock.local(self.t);
        if let Some(flag) = &mut self.rust[i].flag {
            if let Err(e) = flag.handle_input(local, Input::WorkStopped) {
                self.violation = Some(Violation::Contract {
                    who: self.rust[i].host.name.clone(),
                    error: e.to_string(),
                });
                return;
            }
        }
        if drain {
            self.drain(p);
        }
    }

    pub(super) fn believe(&mut self, p: Pid) {
        let t = self.t;
        let r = &mut self.rust[usize::from(p)];
        let local = r.host.clock.local(t);
        r.belief.raised(local, &self.core_configs[usize::from(p)]);
    }

    /// Points the process's timer at its next wake-up.
    pub(super) fn rearm(&mut self, p: Pid) {
        let t = self.t;
        let i = usize::from(p);
        if !self.is_rust(p) {
            // The Go timer is armed by `go_act`; a clock change re-targets it.
            let h = self.host(p);
            if let Some(at) = h.armed {
                h.gen += 1;
                let gen = h.gen;
                let when = h.clock.true_at(at, t);
                self.push(when, Ev::Wake { p, gen });
            }
            return;
        }
        let r = &mut self.rust[i];
        let want = r.flag.as_ref().and_then(Core::poll_timeout);
        if want == r.host.armed {
            return;
        }
        r.host.gen += 1;
        r.host.armed = want;
        if let Some(at) = want {
            let gen = r.host.gen;
            let when = r.host.clock.true_at(at, t);
            self.push(when, Ev::Wake { p, gen });
        }
    }

    pub(super) fn rearm_after_clock_change(&mut self, p: Pid) {
        // Force a new wake-up: the same local instant now falls at another true time. The
        // work's kill at the deadline moves with it.
        if self.is_rust(p) {
            self.host(p).armed = None;
            let t = self.t;
            let r = &self.rust[usize::from(p)];
            if r.work.is_some_and(|w| w.dies_at.is_none()) {
                let gen = r.deadline_gen;
                let at = r.host.clock.true_at(r.lease_deadline, t).max(t);
                self.push(at, Ev::WorkDeadline { p, gen });
            }
        }
        self.rearm(p);
    }

    pub(super) fn go_act(&mut self, p: Pid, next: GoNext) {
        let t = self.t;
        match next {
            GoNext::Send(op, ts) => self.send(p, op, ts),
            GoNext::Sleep(d) => {
                let h = self.host(p);
                h.armed = Some(h.clock.local(t) + d);
                h.gen += 1;
                let gen = h.gen;
                let when = h.clock.true_at(h.armed.expect("just set"), t);
                self.push(when, Ev::Wake { p, gen });
            }
        }
        let g = self.go_mut(p);
        let raised = g.raised;
        self.trace_go(p, raised);
    }

    /// Traces a Go flag's `Raised()` when it changes.
    pub(super) fn trace_go(&mut self, p: Pid, raised: bool) {
        let i = usize::from(p) - self.rust.len();
        if self.go_traced[i] != raised {
            self.go_traced[i] = raised;
            self.trace.push(self.t, p, What::GoRaised(raised));
        }
    }
}

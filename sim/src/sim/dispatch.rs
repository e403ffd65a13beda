//! The event loop's one switch: each event of the queue goes to what handles it.

use leadership_core::{Failure as CoreFailure, Input, Precheck};

use super::process::Reply;
use super::sets::Held;
use super::trace::{Pid, What, DB};
use super::world::{Ev, FaultKind, World};

impl World {
    pub(super) fn dispatch(&mut self, ev: Ev) {
        let t = self.t;
        match ev {
            Ev::Start(_) if t < self.no_start_before => self.push(self.no_start_before, ev),
            Ev::Start(p) => self.start(p),
            Ev::Wake { p, gen } => {
                let h = self.host(p);
                if !h.up || h.gen != gen {
                    return;
                }
                if h.paused(t) {
                    let until = h.paused_until;
                    return self.push(until, ev);
                }
                h.armed = None;
                if self.is_rust(p) && self.rust[usize::from(p)].joined.is_some() {
                    // `join-before-send` off: its renew is on its way, unknown to it; the
                    // driver wakes it once that batch is back (or given up on).
                } else if self.is_rust(p) {
                    let local = self.rust[usize::from(p)].host.clock.local(t);
                    if let Some(flag) = &mut self.rust[usize::from(p)].flag {
                        flag.handle_timeout(local);
                    }
                    self.drain(p);
                } else {
                    let next = self.go_mut(p).on_timer();
                    self.go_act(p, next);
                }
            }
            Ev::Arrive(slot) => {
                let stmt = self.in_net[slot as usize];
                self.free_slots.push(slot);
                if stmt.timeline != self.timeline {
                    // Sent to the primary that failed over: it never arrives anywhere.
                    self.trace.push(t, DB, What::Lost);
                } else if self
                    .config
                    .undeclared_outage
                    .is_some_and(|o| t >= o.as_nanos() as u64)
                {
                    self.trace.push(t, DB, What::Lost);
                } else if t < self.stall_until {
                    self.stalled.push(Held::One(stmt));
                } else {
                    self.execute(stmt);
                }
            }
            Ev::Reply { p, inc, id } => {
                let h = self.host(p);
                if !h.up || h.inc != inc || h.inflight.map(|(i, _)| i) != Some(id) {
                    return; // stale: the driver gave up on it, or an earlier life sent it
                }
                if h.paused(t) {
                    let until = h.paused_until;
                    return self.push(until, ev);
                }
                let (_, op) = h.inflight.take().expect("checked above");
                let reply = h.reply.take().unwrap_or(Reply::Error);
                self.trace.push(t, p, What::Reply(op));
                self.deliver(p, reply);
            }
            Ev::Timeout { p, inc, id } => {
                let h = self.host(p);
                if !h.up || h.inc != inc || h.inflight.map(|(i, _)| i) != Some(id) {
                    return;
                }
                if h.paused(t) {
                    let until = h.paused_until;
                    return self.push(until, ev);
                }
                h.inflight = None;
                h.reply = None;
                self.stats.timeouts += 1;
                self.trace.push(t, p, What::Timeout);
                if !self.is_rust(p) {
                    self.deliver(p, Reply::Error);
                } else if self.rust[usize::from(p)]
                    .joined
                    .take_if(|(joined, _)| *joined == id)
                    .is_some()
                {
                    // A renew the driver joined to a batch unknown to the core (with
                    // `join-before-send` off) is dropped: the core waits for nothing, and is
                    // woken for its renew again.
                    self.rearm(p);
                } else {
                    self.feed(p, Input::Failed(CoreFailure::Timeout));
                }
            }
            Ev::Notify { p, inc } => {
                let h = self.host(p);
                if !h.up || h.inc != inc {
                    return;
                }
                if h.paused(t) {
                    let until = h.paused_until;
                    return self.push(until, ev);
                }
                self.rust[usize::from(p)].notified += 1;
                self.trace.push(t, p, What::Notified);
                self.feed(p, Input::Notified);
            }
            Ev::Fault(kind) => self.fault(kind),
            Ev::StallEnd => {
                self.trace.push(t, DB, What::StallEnd);
                let held = std::mem::take(&mut self.stalled);
                for h in &held {
                    match (*h, self.stall_fails) {
                        (Held::One(stmt), true) => self.fail_stmt(stmt),
                        (Held::One(stmt), false) => self.execute(stmt),
                        (Held::Batch(slot), true) => self.fail_batch(slot),
                        (Held::Batch(slot), false) => self.execute_batch(slot),
                    }
                }
                self.stalled = held;
                self.stalled.clear();
            }
            Ev::Precheck { p, inc } => {
                let h = self.host(p);
                if !h.up || h.inc != inc {
                    return;
                }
                if h.paused(t) {
                    let until = h.paused_until;
                    return self.push(until, ev);
                }
                let ppm = self.faults.precheck.unwrap_or(0);
                let draw = self.rng.below(1_000_000);
                let answer = if draw < ppm {
                    Precheck::Refuse
                } else if draw < 2 * ppm {
                    Precheck::Error
                } else {
                    Precheck::Pass
                };
                if answer != Precheck::Pass {
                    // A refusal hands leadership over on purpose: a fault for liveness.
                    self.stats.faults[FaultKind::Precheck as usize] += 1;
                    self.quiet_until(t);
                }
                self.trace.push(t, p, What::Precheck(answer));
                self.feed(p, Input::Precheck(answer));
            }
            Ev::WorkEnds { p, work } => self.work_ends(p, work),
            Ev::EffectTick { p, work } => self.effect_tick(p, work),
            Ev::EffectLands {
                p,
                token,
                fenced,
                timeline,
            } => self.effect_lands(p, token, fenced, timeline),
            Ev::Reaped { p, inc } => {
                let h = self.host(p);
                if !h.up || h.inc != inc {
                    return;
                }
                if h.paused(t) {
                    let until = h.paused_until;
                    return self.push(until, ev);
                }
                if self.config.safeguards.release_after_work {
                    self.tell_work_stopped(p, true);
                }
            }
            Ev::WorkDeadline { p, gen } => self.work_deadline(p, gen),
            Ev::Snapshot => {
                self.snapshots.push_back((t, self.table.clone()));
                while self.snapshots.len() > 60 {
                    self.snapshots.pop_front();
                }
                self.push(t + 100_000_000, Ev::Snapshot);
            }
            Ev::Drift(p) => {
                let d = self.faults.drift;
                let ppm = self.rng.signed(d.max_ppm);
                // One clock for the process: every flag's core reads it.
                for c in self.siblings(p) {
                    let c = c as Pid;
                    self.host(c).clock.set_rate(t, ppm);
                    self.trace.push(t, c, What::Drift(ppm));
                    self.rearm_after_clock_change(c);
                }
                let next = self.rng.below(2 * d.every.as_nanos() as u64).max(1);
                self.push(t + next, Ev::Drift(p));
            }
            Ev::BatchArrives(slot) => self.batch_arrives(slot),
            Ev::BatchReply(slot) => self.batch_reply(slot),
            Ev::RowUnlock(f) => self.unlock_row(usize::from(f)),
        }
    }
}

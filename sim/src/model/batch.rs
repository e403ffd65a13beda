//! A process's two flags whose checks go as one statement (issue 28, `Params::flags` = 2):
//! its driver's outbox and what it sends when free, as the simulator's set driver
//! (`sim/batch.rs`) does.
//!
//! After every event, each process whose driver is free (no statement waited for) and not
//! paused sends what its cores asked for: a release alone, else every check queued as one
//! statement, after serving a core whose timer is due and handing `Input::Batching` to a core
//! whose early window has opened (its renew joins). A batch of two is one message: run by one
//! event (or lost, or late, as one), one reply for both. The row-lock event runs a batch while
//! another transaction holds one of its rows, which the batch skips if it would write it (that
//! core alone is told `Failed(NotAttempted)`). With the `join-before-send` safeguard off, the
//! driver puts into the batch the renew the joining core would send, and tells the core only
//! when the batch returns.

use leadership_core::Input;

use super::events::log;
use super::world::{Sent, World, MAX_FLAGS};
use super::Params;
use crate::check::Check;
use crate::sim::trace::Op;
use crate::violation::Violation;

impl World {
    /// Whether any core of process `s` is up.
    pub fn set_up(&self, s: usize) -> bool {
        self.set(s).any(|p| self.up(p))
    }

    /// Every free process's driver sends what its cores asked for (two flags only).
    pub(super) fn flush_all(&mut self, params: &Params) {
        if self.flags == 1 {
            return;
        }
        for s in 0..self.procs.len() / usize::from(self.flags) {
            self.flush(params, s);
        }
    }

    fn flush(&mut self, params: &Params, s: usize) {
        let head = self.set(s).start;
        // What cores that have exited asked for is gone with them.
        let up: Vec<bool> = self.set(s).map(|p| self.up(p)).collect();
        let pr = &mut self.procs[head];
        pr.outbox.retain(|(f, _)| up[usize::from(*f)]);
        if pr.outbox.is_empty() || pr.inflight.is_some() || pr.paused {
            return;
        }
        if let Some(k) = pr
            .outbox
            .iter()
            .position(|(_, op)| matches!(op, Op::Release { .. }))
        {
            let (f, op) = pr.outbox.remove(k);
            return self.send_sent(params, head, Sent::one(usize::from(f), op));
        }
        // Before sending: a core whose timer is due checks too, and a renew whose early
        // window has opened joins.
        let mut joined = 0u8;
        for p in self.set(s) {
            let f = self.flag(p);
            if self.procs[head]
                .outbox
                .iter()
                .any(|(q, _)| usize::from(*q) == f)
            {
                continue;
            }
            let local = self.local(params, p);
            let Some(core) = &self.procs[p].core else {
                continue;
            };
            if core.flag().poll_timeout().is_some_and(|at| at <= local) {
                self.fire_timer(params, p);
                continue;
            }
            if core
                .flag()
                .poll_early_check()
                .is_none_or(|earliest| earliest > local)
            {
                continue;
            }
            let who = self.label(p);
            if params.sim.safeguards.join_before_send {
                log(|| format!("{who} joins the batch early (Batching)"));
                self.feed(params, p, Input::Batching);
                continue;
            }
            // Safeguard off: the renew the core would send goes in, the core unaware.
            let mut probe = core.clone();
            if !matches!(probe.handle_input(local, Input::Batching), Ok(Ok(()))) {
                continue;
            }
            let mut check = None;
            while let Ok(Some(c)) = probe.poll_command() {
                check = check.or(Check::from_command(&c));
            }
            if let Some(check) = check.map(|c| c.as_sent(&params.sim.safeguards)) {
                log(|| {
                    format!("{who}'s renew put in the batch, its core not told (safeguard off)")
                });
                self.procs[head].outbox.push((f as u8, Op::Check(check)));
                joined |= 1 << f;
            }
        }
        let mut ops = [None; MAX_FLAGS];
        self.procs[head].outbox.retain(|&(f, op)| match op {
            Op::Check(_) => {
                ops[usize::from(f)] = Some(op);
                false
            }
            _ => true,
        });
        let sent = Sent { ops, joined };
        if sent.parts().next().is_none() {
            return;
        }
        if sent.is_batch() {
            let who = self.label(head);
            log(|| format!("{who}'s driver sends its checks as ONE batch"));
        }
        self.send_sent(params, head, sent);
    }

    /// Core `p`'s timer fires (`handle_timeout`), and its commands are carried out.
    pub(super) fn fire_timer(&mut self, params: &Params, p: usize) {
        let local = self.local(params, p);
        if let Some(core) = &mut self.procs[p].core {
            if let Err(b) = core.handle_timeout(local) {
                let who = self.procs[p].name.clone();
                return self.violate(Violation::CorePromise {
                    who,
                    what: b.to_string(),
                });
            }
        }
        self.drain(params, p);
        // A timer served must not be due again at once: a driver would spin (and the
        // model would never let time move on).
        let again = self.procs[p]
            .core
            .as_ref()
            .and_then(|c| c.flag().poll_timeout());
        if again.is_some_and(|at| at <= local) && self.procs[p].core.is_some() {
            let who = self.procs[p].name.clone();
            self.violate(Violation::CorePromise {
                who,
                what: format!(
                    "poll_timeout {again:?} still due at {local:?} right after handle_timeout"
                ),
            });
        }
    }

    /// With `join-before-send` off: the batch that carried core `p`'s renew, unknown to it,
    /// has returned; the driver hands it `Input::Batching` now (so that renew's lease counts
    /// from now), then its part of the reply. A core that asks for another check meanwhile
    /// has it sent, and the part is dropped.
    pub(super) fn join_late(
        &mut self,
        params: &Params,
        p: usize,
        check: Check,
        reply: super::world::Reply,
    ) {
        let who = self.label(p);
        log(|| format!("{who}: the batch is back; its core is told to join only now"));
        self.swallow = Some((p, check));
        self.swallowed = false;
        self.feed(params, p, Input::Batching);
        self.swallow = None;
        if std::mem::take(&mut self.swallowed) {
            self.deliver_to(params, p, reply);
        }
    }
}

//! The protocol's protections, each of which the simulator and the model check can switch
//! off (`--unsafe`) to watch the checker fail.

/// The protocol's protections. All on by default; each switched off must let the simulator
/// find two leaders (the checker can fail).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Safeguards {
    /// Judge a Rust process by `is_leader(local_now)`. Off: by the `Raise`/`Lower` commands it
    /// has handled, as the Go flag's `Raised()` does, so a paused leader believes on.
    pub local_deadline: bool,
    /// The table takes a row over only if its lease expired. Off: any check takes it.
    pub expiry_check: bool,
    /// The deadline counts from when the winning check was sent. Off: from when its reply
    /// arrived, so a slow reply stretches the belief past the lease.
    pub deadline_from_send: bool,
    /// On a close or a refused precheck, the row is released only after the leader-only work
    /// has stopped. Off: the driver says the work stopped at once, as a driver without guards
    /// would, so the next leader can start while it still runs.
    pub release_after_work: bool,
    /// The work is told to stop when the lease is at risk (a stop-ahead before the deadline)
    /// and killed at the deadline. Off: the old `run`: told when leadership ends, killed a
    /// grace (the stop-ahead) later.
    pub at_risk_stop: bool,
    /// A watchdog outside the supervisor kills the work at the deadline even while the
    /// supervisor is frozen. Off: the kill waits for the supervisor to run again.
    pub watchdog: bool,
    /// The row is never released while the work is known to run. Off: the old core's bound,
    /// the release goes out at the lease's deadline whatever the work does.
    pub no_release_while_working: bool,
    /// After evidence of lost writes the core takes nothing for a lease, and no check writes a
    /// version at or below one seen. Off: checks go out as if no write was ever lost.
    pub lost_writes_rule: bool,
    /// A process that has seen the row never inserts it in the check that finds it missing:
    /// it learns the row vanished (a `DELETE`), takes nothing for a lease, then may insert.
    /// Off: a missing row is inserted at once whenever the check may take.
    pub vanished_row_rule: bool,
    /// The leader-only work runs the fence (`sql::FENCE`) first in each transaction of its
    /// own on the database: what it writes commits while its term holds the flag, or not at
    /// all. Off: its writes are unfenced, and one delayed past the term lands in a later term.
    /// (The model checker's user effects, and the simulator's with `SimConfig::effects`.)
    pub fence: bool,
    /// The check carries the server it expects and computes the answering one's identity in
    /// the statement: on another (a pooler swapped it under the connection) it writes nothing
    /// and says which, and the core fences as on a new connection. Off: the check compares
    /// nothing and names no server, so a swap behind a pooler goes unnoticed (issue 25).
    pub server_in_statement: bool,
    /// A new term's token is at least the database's clock in µs (`sql::CHECK`), so tokens
    /// never go back, newcomers and lost histories included. Off: `greatest(version + 1,
    /// floor)`, and an insert writes the floor, as before issue 25.
    pub clock_floor: bool,
    /// A flag that joins a batch early is handed `Input::Batching` before the batch is sent,
    /// so its renew's lease counts from the send, like every check's (issue 28). Off: the
    /// driver puts the renew the core would send into the batch and hands the core
    /// `Input::Batching` when the batch returns, so that lease counts from the reply, and a
    /// slow reply stretches it past the row's. (`SimConfig::batch` only.)
    pub join_before_send: bool,
}

impl Default for Safeguards {
    fn default() -> Safeguards {
        Safeguards {
            local_deadline: true,
            expiry_check: true,
            deadline_from_send: true,
            release_after_work: true,
            at_risk_stop: true,
            watchdog: true,
            no_release_while_working: true,
            lost_writes_rule: true,
            vanished_row_rule: true,
            fence: true,
            server_in_statement: true,
            clock_floor: true,
            join_before_send: true,
        }
    }
}

/// The names `--unsafe` takes.
pub const SAFEGUARD_NAMES: [&str; 13] = [
    "local-deadline",
    "expiry-check",
    "deadline-from-send",
    "release-after-work",
    "at-risk-stop",
    "watchdog",
    "no-release-while-working",
    "lost-writes-rule",
    "vanished-row-rule",
    "fence",
    "server-in-statement",
    "clock-floor",
    "join-before-send",
];

impl Safeguards {
    /// Switches off the safeguards in a comma-separated list of [`SAFEGUARD_NAMES`].
    pub fn without(list: &str) -> Result<Safeguards, String> {
        let mut s = Safeguards::default();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "local-deadline" => s.local_deadline = false,
                "expiry-check" => s.expiry_check = false,
                "deadline-from-send" => s.deadline_from_send = false,
                "release-after-work" => s.release_after_work = false,
                "at-risk-stop" => s.at_risk_stop = false,
                "watchdog" => s.watchdog = false,
                "no-release-while-working" => s.no_release_while_working = false,
                "lost-writes-rule" => s.lost_writes_rule = false,
                "vanished-row-rule" => s.vanished_row_rule = false,
                "fence" => s.fence = false,
                "server-in-statement" => s.server_in_statement = false,
                "clock-floor" => s.clock_floor = false,
                "join-before-send" => s.join_before_send = false,
                other => {
                    return Err(format!(
                        "unknown safeguard {other:?}; known: {}",
                        SAFEGUARD_NAMES.join(",")
                    ))
                }
            }
        }
        Ok(s)
    }

    /// The names of the safeguards switched off.
    pub fn names_off(&self) -> String {
        let off = [
            !self.local_deadline,
            !self.expiry_check,
            !self.deadline_from_send,
            !self.release_after_work,
            !self.at_risk_stop,
            !self.watchdog,
            !self.no_release_while_working,
            !self.lost_writes_rule,
            !self.vanished_row_rule,
            !self.fence,
            !self.server_in_statement,
            !self.clock_floor,
            !self.join_before_send,
        ];
        SAFEGUARD_NAMES
            .iter()
            .zip(off)
            .filter(|(_, off)| *off)
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(",")
    }
}

//! The check as a modelled driver sends it: the one way from the core's
//! [`Command::Check`] to the reference table's call, shared by the simulator (`sim/`), the
//! shard simulator (`sim/shards/`) and the model check (`model/`).
//!
//! A real driver binds the command's fields to [`sql::CHECK`](leadership_core::sql::CHECK)'s
//! parameters; here [`Check::args`] binds them to [`CheckArgs`], and [`run`] executes them on
//! the [`RefTable`] the way the simulator and the model check both model a server. With a
//! safeguard switched off ([`Safeguards`]), [`Check::as_sent`] is what an older driver sends
//! instead. [`run_batch`] runs the checks of one process's flags as one statement
//! ([`sql::CHECK_BATCH`](leadership_core::sql::CHECK_BATCH), issue 28).

use leadership_core::{Command, DbTime, Identity, Server};

use crate::safeguards::Safeguards;
use crate::table::{BatchRow, CheckArgs, CheckResult, RefTable};

/// The fields of a [`Command::Check`], as sent (and as the trace records it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Check {
    /// The version to renew.
    pub renew: Option<i64>,
    /// The lowest version a win may write.
    pub floor: i64,
    /// Whether it may take over an expired row.
    pub may_take: bool,
    /// Whether it may insert a missing row.
    pub may_insert: bool,
    /// The term a renew continues.
    pub continues: Option<i64>,
    /// The server it expects to run on.
    pub expect: Option<Identity>,
}

impl Check {
    /// The check a command asks for; `None` for every other command.
    pub fn from_command(command: &Command) -> Option<Check> {
        match *command {
            Command::Check {
                renew,
                floor,
                may_take,
                may_insert,
                continues,
                expect,
            } => Some(Check {
                renew,
                floor,
                may_take,
                may_insert,
                continues,
                expect,
            }),
            _ => None,
        }
    }

    /// What the driver sends with the statement's safeguards as `safeguards` says: unchanged
    /// with all on. Without the lost-writes rule, no floor above what a renew writes and no
    /// fence (it may always take); without the vanished-row rule, a missing row is inserted
    /// whenever it may be taken, as the check did before; without the server in the
    /// statement, it expects no server, as before issue 25.
    pub fn as_sent(self, safeguards: &Safeguards) -> Check {
        let (floor, may_take) = if safeguards.lost_writes_rule {
            (self.floor, self.may_take)
        } else {
            (self.renew.map_or(0, |v| v.saturating_add(1)), true)
        };
        let may_insert = if safeguards.vanished_row_rule {
            self.may_insert
        } else {
            may_take
        };
        Check {
            floor,
            may_take,
            may_insert,
            expect: self.expect.filter(|_| safeguards.server_in_statement),
            ..self
        }
    }

    /// The statement's parameters for process `process` checking flag `name` with a lease of
    /// `lease_micros`.
    pub fn args<'a>(&self, name: &'a str, process: &'a str, lease_micros: i64) -> CheckArgs<'a> {
        CheckArgs {
            name,
            process,
            renew: self.renew,
            lease_micros,
            floor: self.floor,
            may_take: self.may_take,
            may_insert: self.may_insert,
            continues: self.continues,
            expect: self.expect,
        }
    }
}

/// Executes the check `args` on `table` at database time `now` on the server `server` (its
/// identity: the statement computes no `promoted_ago`). Without the server in the statement
/// (`safeguards`), the reply names no server.
pub fn run(
    table: &mut RefTable,
    now: DbTime,
    server: Server,
    args: &CheckArgs<'_>,
    safeguards: &Safeguards,
) -> CheckResult {
    let server = Server {
        promoted_ago: None,
        ..server
    };
    let mut r = table.check_on(now, &server, args);
    if !safeguards.server_in_statement {
        r.server = None;
    }
    r
}

/// Executes the checks `args` of one process's flags as one batch on `table` at database time
/// `now` on `server`, as [`run`] does each; a row `locked` says another transaction holds is
/// skipped if the check would write it ([`RefTable::check_batch_on`]).
pub fn run_batch(
    table: &mut RefTable,
    now: DbTime,
    server: Server,
    args: &[CheckArgs<'_>],
    locked: impl Fn(&str) -> bool,
    safeguards: &Safeguards,
) -> Vec<BatchRow> {
    let server = Server {
        promoted_ago: None,
        ..server
    };
    let mut rows = table.check_batch_on(now, &server, args, locked);
    if !safeguards.server_in_statement {
        rows.iter_mut().for_each(|r| r.result.server = None);
    }
    rows
}

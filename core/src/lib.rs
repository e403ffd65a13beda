//! The leadership protocol as a sans-IO state machine: one row per flag in a PostgreSQL table,
//! compatible with the Go `leadership.Flag` of ocm-sdk-go, with one statement per check.
//!
//! This crate decides; it never reads a clock, does I/O, sleeps or draws randomness of its own.
//! A driver (tokio, blocking threads, or the simulator) turns its [`Command`]s into SQL and
//! timers, and feeds back [`Input`]s with the local monotonic time ([`Instant`]). The
//! database's time ([`DbTime`]) arrives inside the rows, and only there.
//!
//! # The protocol
//!
//! The table is the Go flag's: `leadership_flags(name text primary key, holder text, version
//! bigint, timestamp timestamptz)`. Every few seconds each process runs [`sql::CHECK`], one
//! statement that inserts the row if there is none, renews it if it names this process at the
//! version this process last wrote, or takes it over if `now() - timestamp > interval` by the
//! database's clock, and in every case returns the row and `now()`. A process leads only after
//! a statement of its own changed the row. Every write raises `version` (a renewal by one), so
//! a write based on an old read fails; the version at which a term began is its fencing token, which the
//! check also writes into the row's term column (a new term) or keeps there (a renew of the
//! same term: [`Command::Check`]'s `continues`), so that [`sql::FENCE`], run first in a user's
//! transaction, lets it commit only while that very term holds the flag. A graceful
//! [`Input::Close`] releases the row ([`sql::RELEASE`]: timestamp set to 1970, so every reader,
//! Go included, sees it expired) and notifies the followers.
//!
//! # Why two processes never both believe they lead
//!
//! A process raises only on a won check it sent at local instant `s`, and believes it leads
//! until its *deadline* `s + interval - margin` by its own monotonic clock; a renew moves the
//! deadline only when it wins. [`Flag::is_leader`] answers from the deadline alone, so a
//! process that is paused, cut off, or stuck in a hung statement stops believing the instant
//! the deadline passes; a [`Command::Lower`] follows at the same instant.
//!
//! The won statement wrote `timestamp = now()` at its start on the server, which is after it
//! was sent, so `timestamp ≥ s` as the database's clock reads it. Another process can only win
//! the row by taking it over (renewing needs its own name in the row; inserting needs no
//! row), and a takeover needs `now() - timestamp > interval` at the start of its statement, on
//! the server, under the row lock. So the next leader begins more than `interval` after `s` by
//! the database's clock, while this one stopped at `interval - margin` after `s` by its own.
//! That is safe when:
//!
//! 1. every process on a flag uses the same `interval` (or the leader one no longer than the
//!    others'): each judges expiry with its own;
//! 2. over one interval, each local monotonic clock and the database's clock drift apart by
//!    less than `margin` (default interval/20, 5%, far above the 0.05% NTP may slew), and the
//!    database's clock is not stepped forward by more than what remains of the margin;
//! 3. process names are unique per flag (two processes with one name are one holder to the
//!    table). The core keeps the damage of a duplicate name to liveness: a row under its name
//!    is its lease only at a version this incarnation wrote, or the one version its renew in
//!    doubt would have written, seen before the lease it renewed would have lapsed (before
//!    then nobody can have taken that lease over). Any other live row under its name, at the
//!    first check as later, belongs to another process, a twin or an earlier incarnation that
//!    may still run: [`Anomaly::DuplicateProcess`], and it waits for that lease to expire or be
//!    released. A graceful close releases, so a normal restart waits for nothing; a restart
//!    after a crash, under the same name, waits one lease. A takeover or an insert in doubt is
//!    never adopted (a twin's renew or takeover writes the same version under the same name):
//!    its row, if it committed, is left to expire. The Go flag adopts any row under its name,
//!    so a Go twin, or a Go process restarted while its earlier incarnation still runs, can
//!    lead beside another holder of the name; a mixed fleet with unique names sees nothing of
//!    this.
//!
//! # Why the leader's work stops before another leader starts
//!
//! Belief is not enough: users care that two leaders' *work* never overlaps. The lease
//! carries an *at-risk* instant, the deadline minus the stop-ahead
//! ([`Config::stop_ahead`]). If no renew has won by then, [`Command::AtRisk`] tells the driver
//! to stop the leader-only work, which then has the stop-ahead to end before the deadline; the
//! deadline is the hard bound (a driver may kill the work there, as `leadership run` does), and
//! the next leader can only start a margin later. The renew schedule leaves room for one renew
//! attempt (with its precheck) before the at-risk instant, and by default for a failed one and
//! its retry too, so a blip does not stop the work. On a graceful release the row is released
//! only after the work has said it stopped ([`Input::WorkStopped`]), never while it is known
//! to run: if it has not stopped a margin after the deadline, the lease is left to expire.
//! Nor is a lease that lapsed at its deadline released within a margin of it: its work, killed
//! at the deadline, may still be ending, and a release would hand over at once where expiry
//! waits the margin.
//!
//! Nothing else is assumed: not message timing, not the delivery of notifications, not the
//! behaviour of the other processes beyond following this rule. Go processes take over only
//! by the same rule, judged even earlier (their `now()` is read before their update), so a
//! mixed fleet never has two Rust leaders and a Rust process never takes a lease the Go flag
//! still holds by its rule. (A Go leader itself believes until its next check, so it can
//! overlap with its successor after a pause; ours cannot.)
//!
//! # Lost writes, other servers, and tokens that never go back
//!
//! The rule above holds on one history of the row. A failover to a lagging standby, a restored
//! backup, or a crash of a server that is not durable loses committed writes: the row goes back
//! in time, and an expired-looking row may carry a lease still believed. The evidence is an
//! input: a row version below one seen, a vanished row, or another server ([`Input::Connected`],
//! and the server's identity that [`sql::CHECK`] computes in the statement itself and compares
//! with [`Command::Check`]'s `expect`, so a pooler swapping the server under an open connection
//! is caught where the write would land). On evidence the core takes nothing for one lease plus
//! the margin ([`Anomaly::LostWrites`]): every lease granted on the lost history has ended
//! first. A server that is not durable refuses takeovers and inserts in the statement for a
//! lease after its start, which fences a process that never saw the old history too.
//!
//! Fencing tokens never go back for our processes: a new term's token is at least the server's
//! clock in microseconds (and above every version the process saw), a renewal adds one. So a
//! term started after a failover is above every token of the lost history, seen or not,
//! provided the new server's clock reads later than the old one's did at the lost write, and
//! the row is written less than once per microsecond (versions never run ahead of the clock).
//! The Go flag ignores both (its takeover writes `version + 1`, its insert 0).
//!
//! # The run loop
//!
//! A driver owns a [`Flag`] and loops: carry out the commands, wait for the earliest of the
//! timeout, a statement's reply or a notification, feed it in. Here it is against an in-memory
//! stand-in for the database, with time that jumps to each wake-up:
//!
//! ```
//! use core::time::Duration;
//! use leadership_core::{Checked, Command, Config, DbTime, Flag, Input, Instant, Row, WonBy};
//!
//! // One row, the database's clock, and the check statement's rules (see `sql::CHECK`).
//! struct Db { row: Option<(String, i64, DbTime)>, now: DbTime }
//! impl Db {
//!     fn check(&mut self, process: &str, renew: Option<i64>, lease: i64) -> bool {
//!         let won = match &self.row {
//!             None => true,
//!             Some((holder, version, ts)) => {
//!                 (holder == process && Some(*version) == renew)
//!                     || self.now.micros_since(*ts) > lease
//!             }
//!         };
//!         if won {
//!             let version = self.row.as_ref().map_or(0, |r| r.1 + 1);
//!             self.row = Some((process.to_string(), version, self.now));
//!         }
//!         won
//!     }
//! }
//!
//! let config = Config::builder("nightly-report", "pod-a")
//!     .interval(Duration::from_secs(2))
//!     .build()?;
//! let lease_us = config.interval_micros();
//! let mut now = Instant::ZERO;
//! let mut db = Db { row: None, now: DbTime::from_unix_micros(1_700_000_000_000_000) };
//! let mut flag = Flag::new(config, 42, now);
//! let (mut raises, mut renewals) = (0, 0);
//!
//! for _ in 0..20 {
//!     // 1. Carry out every command the last input produced.
//!     while let Some(command) = flag.poll_command() {
//!         match command {
//!             Command::Check { renew, .. } => {
//!                 let won = db.check("pod-a", renew, lease_us);
//!                 let row = db.row.as_ref().map(|(holder, version, ts)| Row {
//!                     holder: Some(holder.as_str()),
//!                     version: Some(*version),
//!                     timestamp: Some(*ts),
//!                 });
//!                 let won_by = won.then_some(WonBy::Created).filter(|_| raises == 0);
//!                 let reply = Checked { won, won_by, row, now: db.now, server: None };
//!                 flag.handle_input(now, Input::Checked(reply))?;
//!             }
//!             Command::Raise(lease) => {
//!                 raises += 1;
//!                 assert!(flag.is_leader(now) && lease.token == 0);
//!             }
//!             Command::Renewed(_) => renewals += 1,
//!             Command::Lower(reason) => panic!("lowered: {reason:?}"),
//!             other => panic!("unexpected {other:?}"),
//!         }
//!     }
//!     // 2. Sleep until the core's next wake-up (a real driver also wakes for replies and
//!     //    notifications), then tell the core the time.
//!     let wake = flag.poll_timeout().expect("a running flag always has a next wake-up");
//!     db.now = db.now.saturating_add(wake - now);
//!     now = wake;
//!     flag.handle_timeout(now);
//! }
//! assert_eq!(raises, 1);
//! assert!(renewals >= 10, "renews about every 0.9 s: {renewals}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The rules of the loop: call [`Flag::poll_command`] until it returns `None` after every
//! input and every timeout; reply to each statement exactly once (with [`Input::Failed`] if it
//! failed or took longer than [`Config::timeout`]); never hand in a `now` earlier than the
//! last; answer [`Flag::is_leader`] with the clock at the moment of the question.
//!
//! **Batches.** A driver that runs many flags of one process may send their checks as one
//! statement ([`sql::CHECK_BATCH`]). Before it sends, it hands [`Input::Batching`] to each
//! other flag whose [`Flag::poll_early_check`] has passed: a leader's renew then goes early
//! (never late: its lease counts from now), a follower's check once the holder's lease can
//! have expired. Each flag then gets its own row as its [`Input::Checked`], or
//! [`Failure::NotAttempted`] if the batch skipped a row another transaction had locked.
//!
//! # The vocabulary we started from
//!
//! The project began with a sketch of the machine in other words: events `Tick`, `Now(t)`,
//! `Loaded(row)` and `UpdateResult(n)`; commands `QueryNow`, `Update<version>`, `Raise` and
//! `Schedule(d)`. Each lives on here, some merged:
//!
//! | started from | here | why |
//! |---|---|---|
//! | `Tick` | [`Flag::handle_timeout`] | a timer is not an input variant: the driver calls it when [`Flag::poll_timeout`] passes |
//! | `Now(t)` | the `now` argument of every call | the core never reads a clock; time arrives with every input, never on its own |
//! | `QueryNow`, `Loaded(row)`, `Update<version>`, `UpdateResult(n)` | [`Command::Check`] → [`Input::Checked`] | one statement per check: [`sql::CHECK`] reads the row, writes it when it may (renew, take over, insert) and returns the row after the change with the server's `now()`, so the read, the database's time and the write's outcome come back in one reply; separate steps would cost three round trips and let the row change between the read and the write |
//! | `Raise` | [`Command::Raise`], and [`Command::Lower`] with its reason | a raise needs its end: a lowering says why (deadline passed, lost, precheck refused, closed, resigned, unwanted) |
//! | `Schedule(d)` | [`Flag::poll_timeout`] | an instant, not a delay: polling again returns the same instant, so a driver may ask at any time and it never drifts |
//!
//! Added since: the release ([`Command::Release`] → [`Input::Released`]), a failed statement
//! ([`Input::Failed`]), the precheck, notifications, close and resign, the leader-only work
//! ([`Command::StopWork`] → [`Input::WorkStopped`]), the server's identity
//! ([`Input::Connected`]) and the balance switch ([`Input::Wanted`]): every outside event enters
//! through [`Input`].

#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(test)]
extern crate std;

#[cfg(any(test, feature = "audit"))]
pub mod audit;
pub mod balance;
mod command;
mod config;
mod error;
mod flag;
mod input;
pub mod observe;
mod queue;
mod rng;
mod server;
pub mod sql;
mod time;

#[cfg(test)]
mod tests;

pub use command::{Anomaly, Command, Lease, LowerReason, WonBy};
pub use config::{
    Config, ConfigBuilder, ConfigError, DEFAULT_INTERVAL, DEFAULT_JITTER, DEFAULT_TIMEOUT,
    MARGIN_FLOOR_DIVISOR, MAX_DURATION, MAX_NAME_BYTES, MIN_DEFAULT_INTERVAL, MIN_INTERVAL,
    MIN_TIMEOUT,
};
pub use error::ContractError;
pub use flag::{Flag, Seen};
pub use input::{Checked, Failure, Input, InputKind, Precheck, Row};
pub use server::{Identity, Server};
pub use time::{DbTime, Instant};

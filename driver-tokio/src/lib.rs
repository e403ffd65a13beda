//! Leadership election on PostgreSQL for tokio: a thin driver around [`leadership_core`].
//!
//! One process among many holds a *flag* (a row of a PostgreSQL table) at a time. The table and
//! the protocol are the Go `leadership.Flag`'s (ocm-sdk-go), so Go and Rust processes can share
//! a table; each check is one statement and one round trip. Every decision is taken by the
//! core's state machine; this crate runs its statements and timers on tokio with
//! `tokio-postgres`.
//!
//! ```no_run
//! use std::time::Duration;
//! use leadership_tokio::Flag;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), leadership_tokio::Error> {
//!     let flag = Flag::builder("nightly-report", "pod-a")
//!         .connect_str("host=db user=app dbname=app")
//!         .interval(Duration::from_secs(10))
//!         .start(tokio_postgres::NoTls)
//!         .await?;
//!     let shutdown = flag.clone(); // every clone drives the same flag
//!     tokio::spawn(async move {
//!         let _ = tokio::signal::ctrl_c().await;
//!         // Releases the row so another process takes over at once.
//!         let _ = shutdown.close_within(Duration::from_secs(20)).await;
//!     });
//!     // The leader-only work, once per term, stopped in time when the lease is at risk.
//!     flag.lead(|guard| async move {
//!         let stop = guard.stop_token();
//!         while !stop.is_cancelled() {
//!             // One step of the leader's work; fence writes with `guard.token()`.
//!             tokio::time::sleep(Duration::from_millis(100)).await;
//!         }
//!     })
//!     .await
//! }
//! ```
//!
//! # What the driver does
//!
//! - [`FlagBuilder::start`] connects once and fails fast with a typed [`Error`] (unreachable
//!   host, refused login, invalid names, a table of the wrong shape). It creates the table if
//!   missing, safely when many processes start at once.
//! - Then a task loops: it waits for the core's next wake-up or the pending statement's reply,
//!   feeds it to the core and carries out the commands. Every statement (connecting included)
//!   is bounded by the timeout; on expiry the connection is dropped and replaced, with
//!   exponential backoff after consecutive failures.
//! - [`Flag::is_raised`] compares the lease's local deadline with the monotonic clock, so it
//!   turns false at the deadline even while a statement hangs.
//! - Every connection `LISTEN`s on the table's channel. A process that releases a flag (on
//!   [`Flag::close`], or when its precheck refuses) notifies it, and the followers of that
//!   flag check at once instead of at their next scheduled check: a graceful handover takes
//!   milliseconds, not up to a lease. A lost notification only costs that time; Go processes
//!   on the same table keep polling. A connection lost between statements (a restart of the
//!   server or of a pooler) is replaced in the background a retry interval later, so that the
//!   followers keep listening. Behind a pooler in transaction pooling nothing listens (see
//!   [`Pooler`]): a handover waits for the followers' next check.
//! - Leader-only work is tied to the term: [`Flag::lead`] runs it for each term and tells it
//!   to stop when the lease is at risk (no renew has won by the deadline minus the stop-ahead,
//!   so the work has the stop-ahead to end before the deadline); [`Flag::raised`] and
//!   [`Flag::try_lead`] hand out a [`Guard`] (fencing token, deadline) whose
//!   [`Guard::at_risk`] and [`Guard::lost`] fire on time even while the driver is stuck. On a
//!   close the row is released only after every guard is dropped, and never while one lives
//!   (the lease expires instead), so the next leader never starts while this one's work still
//!   runs. [`Flag::subscribe`] watches the [`State`]; [`Flag::current_holder`] says who held
//!   the row at the last check.
//! - Writes of the leader-only work to the database that holds the flags are fenced where they
//!   land: [`Guard::fence_in`] runs the term's [`Fence`] first in the work's transaction, which
//!   then commits only while this term holds the flag, or fails with
//!   [`FenceError::TermOver`]; [`Guard::fence`] gives the statement and its parameters for
//!   other clients.
//! - A [`FlagSet`] runs many flags of one process over one connection; with
//!   [`FlagSet::balanced`] a fleet shares a group of shards, each process leading about its
//!   share ([`Balanced`]), with membership kept in the same table.
//! - With the feature `rustls` (or `native-tls`), `tls` reads libpq's `sslmode`, `sslrootcert`,
//!   `sslcert` and `sslkey` (connection string or `PGSSL*`) and builds the matching connector.
//!
//! ```no_run
//! # async fn demo(flag: leadership_tokio::Flag) -> Result<(), leadership_tokio::Error> {
//! # async fn leader_work(_token: i64) {}
//! let guard = flag.raised().await?;
//! tokio::select! {
//!     () = guard.at_risk() => eprintln!("the lease is at risk; work stopped in time"),
//!     () = leader_work(guard.token()) => {}
//! }
//! drop(guard); // lets a close release the row
//! flag.close().await?;
//! # Ok(()) }
//! ```
//! - Logs go through `tracing` (info on raise, lower and release; debug per check), metrics
//!   through `metrics` (names in [`metrics`]).
//!
//! `leadership-blocking` is a thin layer over this crate: it runs this driver on a background
//! thread and blocks on it.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backoff;
mod balanced;
mod batch;
pub mod boot_clock;
mod builder;
mod connection;
mod connector;
mod done;
mod driver;
mod error;
mod fence;
mod flag;
mod guard;
mod health;
mod lease;
mod link;
mod make_tls;
pub mod metrics;
mod observer;
mod parts;
mod pg;
mod pooler;
mod recorder;
mod schema;
mod set;
mod settings;
mod signals;
mod state;
#[cfg(any(feature = "rustls", feature = "native-tls"))]
pub mod tls;

pub use balanced::{Assignment, Balanced, Ownership};
pub use builder::{default_process, FlagBuilder, FlagSetBuilder};

/// What a [`FlagBuilder`] builds: [`One`](kind::One) flag ([`Flag::builder`]) or a
/// [`Set`](kind::Set) ([`FlagSet::builder`]); each has only its own `start`.
pub mod kind {
    pub use crate::builder::{One, Set};
}
pub use error::Error;
pub use fence::{Fence, FenceError};
pub use flag::{Flag, LastRun, TryLead};
pub use guard::Guard;
pub use health::Health;
pub use leadership_core::WonBy;
pub use lease::{lease_clock_ns, Lease, TermLog, TermRecord, TERM_LOG_LEN};
pub use make_tls::MakeTls;
pub use observer::{Inspector, Observer};
pub use pooler::Pooler;
pub use set::FlagSet;
pub use settings::Settings;
pub use state::{Holder, State};

/// What the test crates (`driver-testkit`, the driver's own tests) and the command-line tool
/// reach of this crate's insides (row decoding for the fuzzer, error formatting); not part of
/// the API, and free to change.
#[doc(hidden)]
pub mod internal {
    pub use crate::connection::CHECK_TYPES;
    pub use crate::pg::{servers, Chain, CheckRow, DecodeError, PgTime, CHECK_COLUMNS};
}

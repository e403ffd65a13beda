//! Leadership election on PostgreSQL for blocking code: a thin driver around
//! [`leadership_core`], on the `postgres` crate and std threads.
//!
//! One background thread runs the core's loop; another owns the connection and runs the
//! statements, so the loop never blocks on I/O: a statement that takes longer than the
//! timeout is given up, its connection abandoned (and cancelled), and a fresh one opened. The
//! table and the protocol are the Go `leadership.Flag`'s, so Go and Rust processes can share a
//! flag.
//!
//! ```no_run
//! use std::time::Duration;
//! use leadership_blocking::Flag;
//!
//! let flag = Flag::builder("scheduler", "pod-a")
//!     .interval(Duration::from_secs(10))
//!     .connect_str("postgres://scheduler@db.internal/ops")
//!     .start(postgres::NoTls)?;
//! loop {
//!     if flag.is_raised() {
//!         // do the leader's work in small steps, asking again before each
//!     }
//!     # break;
//!     std::thread::sleep(Duration::from_secs(1));
//! }
//! flag.close()?;
//! # Ok::<(), leadership_blocking::Error>(())
//! ```
//!
//! # Leader-only work, watchers, the holder
//!
//! [`Flag::wait_raised`] blocks until this process leads and returns a [`Guard`]: the term's
//! fencing token and deadline, and [`Guard::is_valid`], which compares the deadline with the
//! clock and turns false when the term ends (deadline passed, another process took over, the
//! precheck refused, close). On a close or a refused precheck the row is released only once
//! every guard has been dropped (or at the lease's deadline), so the next leader never starts
//! while this one's work runs. [`Flag::subscribe`] gives a channel of [`State`] changes;
//! [`Flag::current_holder`] says who held the row at the last check. A follower also wakes on
//! the `NOTIFY` a release sends and checks at once; a lost notification only costs time.
//!
//! ```no_run
//! use std::time::Duration;
//! # fn step(_token: i64) {}
//! # fn demo(flag: leadership_blocking::Flag) -> Result<(), leadership_blocking::Error> {
//! if let Some(guard) = flag.wait_raised(Duration::from_secs(60)) {
//!     // Guards outlive borrows of the flag: hand one to the thread doing the work.
//!     let work = std::thread::spawn(move || {
//!         while guard.is_valid() {
//!             step(guard.token()); // fence writes elsewhere with the token
//!         }
//!     }); // the guard is dropped when the work has stopped
//!     flag.close()?; // the guard turns invalid at once; the row goes once it is dropped
//!     work.join().expect("the work thread");
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Logs go through `tracing` (info on raise, lower and takeover; debug on every check);
//! metrics through `metrics` (names in `leadership_tokio::metrics`, shared by both drivers),
//! under a prefix set with [`FlagBuilder::metrics_prefix`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod builder;
mod driver;
mod error;
mod flag;
mod guard;
mod schema;
mod worker;

pub use builder::FlagBuilder;
pub use error::Error;
pub use flag::Flag;
pub use guard::Guard;
pub use leadership_core::sql::{ShapeError, TableError};
pub use leadership_core::{ConfigError, WonBy};
pub use leadership_tokio::state::{Holder, State};
pub use leadership_tokio::Lease;

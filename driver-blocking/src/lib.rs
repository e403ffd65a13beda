//! Leadership election on PostgreSQL for blocking code: a thin layer over
//! [`leadership_tokio`], as the `postgres` crate is over `tokio-postgres`.
//!
//! Each [`Flag`] (or [`FlagSet`]) owns one background thread running a current-thread tokio
//! runtime, on which the tokio driver runs; the handles here block the calling thread on it.
//! Behaviour, errors, logs and metrics are the tokio driver's by construction: there is one
//! driver loop. The table and the protocol are the Go `leadership.Flag`'s, so Go and Rust
//! processes can share a flag.
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
//! fencing token and deadline, [`Guard::is_lost`] and [`Guard::wait_lost`]. On a close or a
//! refused precheck the row is released only once every guard has been dropped, so the next
//! leader never starts while this one's work runs. [`Flag::subscribe`] gives the [`State`] as
//! it changes; [`Flag::current_holder`] says who held the row at the last check.
//!
//! ```no_run
//! use std::time::Duration;
//! # fn step(_token: i64) {}
//! # fn demo(flag: leadership_blocking::Flag) -> Result<(), leadership_blocking::Error> {
//! if let Some(guard) = flag.wait_raised(Duration::from_secs(60)) {
//!     let work = std::thread::spawn(move || {
//!         while !guard.is_lost() {
//!             step(guard.token()); // fence writes elsewhere with the token
//!         }
//!     }); // the guard is dropped when the work has stopped
//!     flag.close()?; // the guard is lost at once; the row goes once it is dropped
//!     work.join().expect("the work thread");
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The blocking calls must not be made from inside an async runtime (they panic there, as the
//! `postgres` crate's do).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod balanced;
mod builder;
mod flag;
mod guard;
mod observer;
mod runtime;
mod subscription;

pub use balanced::{Assignment, Balanced, Ownership, OwnershipSubscription};
pub use builder::{FlagBuilder, FlagSetBuilder};
pub use flag::{Flag, FlagSet};
pub use guard::Guard;
pub use leadership_core::sql::{ShapeError, TableError};
pub use leadership_core::{ConfigError, WonBy};
pub use leadership_tokio::{
    default_process, lease_clock_ns, Error, Fence, FenceError, Health, Holder, Lease, Pooler,
    Settings, State, TermLog, TermRecord, TERM_LOG_LEN,
};
pub use observer::Observer;

/// What [`Flag::try_lead`] found.
#[derive(Debug)]
pub enum TryLead {
    /// This process leads: the guard of the term.
    Led(Guard),
    /// Another process holds the flag (as the last check saw it).
    HeldBy(Holder),
}
pub use subscription::Subscription;

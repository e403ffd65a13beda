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
//! Logs go through `tracing` (info on raise, lower and takeover; debug on every check);
//! metrics through `metrics` (names in `leadership_tokio::metrics`, shared by both drivers),
//! under a prefix set with [`FlagBuilder::metrics_prefix`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod builder;
mod driver;
mod error;
mod flag;
mod schema;
mod worker;

pub use builder::FlagBuilder;
pub use error::Error;
pub use flag::Flag;
pub use leadership_core::sql::{ShapeError, TableError};
pub use leadership_core::{ConfigError, WonBy};
pub use leadership_tokio::Lease;

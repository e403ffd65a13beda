//! The `leadership` binary end to end, against real PostgreSQL servers from the server kit: the
//! command runs only on the leader, nothing its process tree started outlives the term, `watch`
//! prints one line per change, TLS, one-shot jobs, every exit code, logs.

mod common;
mod exits;
mod fence;
mod hosts;
mod logs;
mod names;
mod once;
mod run;
mod status;
mod tls;
mod tree;
mod watch;

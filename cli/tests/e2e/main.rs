//! The `leadership` binary end to end, against real PostgreSQL servers from the server kit: the
//! command runs only on the leader, nothing its process tree started outlives the term, `watch`
//! prints one line per change, TLS, one-shot jobs, every exit code, logs, metrics, and the
//! alerting rules in a real Prometheus scraping real processes.

mod common;
mod exits;
mod fence;
mod hosts;
mod logs;
mod metrics;
mod names;
mod once;
mod prometheus;
mod run;
mod status;
mod tls;
mod tree;
mod watch;

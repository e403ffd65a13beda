//! Throwaway servers for tests, depending on nothing of the leadership crates.
//!
//! - [`pg`]: a throwaway PostgreSQL server per test (initdb into a temp dir, free port on
//!   127.0.0.1, torn down when dropped or when the test process dies), with [`pg::ServerOptions`].
//! - [`standby`]: a streaming standby of such a server (base backup), pausable, detachable,
//!   promotable; what a client can learn about a promotion.
//! - [`pgbouncer`]: a throwaway pgbouncer in front of a server, transaction or session pooling,
//!   repointable to another server under open clients; what pgbouncer 1.18 does with prepared
//!   statements, LISTEN, startup options, cancels.
//! - [`tls`]: a server that only accepts TLS, with certificates made by `openssl`.
//! - [`proxy`]: an in-process TCP proxy with latency, black hole and cut knobs, counting writes.
//! - [`netns`]: a network namespace with a veth pair and an iptables partition (root only).
//! - [`helpers`]: the few calls every integration test repeats (`server()`, `psql()`).
//! - [`watchdog`]: cleanup that survives a SIGKILLed test process, and [`scratch::ScratchDir`], a temp dir it removes.

mod command;
pub mod helpers;
pub mod netns;
pub mod pg;
pub mod pgbouncer;
pub mod proxy;
pub mod scratch;
pub mod standby;
pub mod tls;
pub mod watchdog;

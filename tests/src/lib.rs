//! The test kit of the leadership crates.
//!
//! - [`fuzz`]: the bodies of the fuzz targets, shared by `fuzz/` and the replay tests.
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
//! - [`observe`]: the terms of running flags as their drivers recorded them, and the verdicts on
//!   overlaps and token order judged from those instants.
//! - [`table`]: the reference in-memory table with PostgreSQL's semantics.
//! - [`check_variants`]: other texts of the check (the one before issue 14, the candidate not
//!   chosen, a broken one), for the benchmark and the tests to compare with.
//! - [`sim`]: the deterministic multi-process simulator (`--bin simulate`).
//! - [`watchdog`]: cleanup that survives a SIGKILLed test process, and [`watchdog::ScratchDir`].

pub mod check_variants;
pub mod fuzz;
pub mod helpers;
pub mod model;
pub mod netns;
pub mod observe;
pub mod pg;
pub mod pgbouncer;
pub mod proxy;
pub mod sim;
pub mod standby;
pub mod table;
pub mod tls;
pub mod watchdog;

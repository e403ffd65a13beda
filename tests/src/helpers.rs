//! The calls every integration test repeats, written once. They panic (failing the test) with
//! the kit's error, which says what is missing and how to fix it, rather than return errors:
//! a test that cannot get its server cannot go on.

use std::time::{Duration, Instant};

use crate::pg::PgServer;

/// A fresh throwaway server ([`PgServer::start`]); panics if it cannot start.
pub fn server() -> PgServer {
    PgServer::start().unwrap_or_else(|e| panic!("test PostgreSQL: {e}"))
}

/// Runs `sql` with psql on `pg` and returns its output trimmed (`select 1` gives `"1"`; columns
/// are separated by `|`, rows by newlines); panics with the statement and psql's error.
pub fn psql(pg: &PgServer, sql: &str) -> String {
    pg.psql(sql)
        .unwrap_or_else(|e| panic!("psql {sql:?}: {e}"))
        .trim()
        .to_string()
}

/// Polls `cond` every 10 ms until it holds; panics naming `what` after `within`.
pub fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

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

/// Creates the login role `role` (a superuser, so it may create the table) and returns a
/// connection string as that role: a process of its own, whose backend a test can find in
/// `pg_stat_activity` and freeze, and whose logins it can refuse (`ALTER ROLE … NOLOGIN`),
/// without touching the kit's connection or other processes'.
pub fn login_as(pg: &PgServer, role: &str) -> String {
    psql(pg, &format!("CREATE ROLE \"{role}\" LOGIN SUPERUSER"));
    format!(
        "host={} port={} user={role} dbname=postgres",
        pg.host(),
        pg.port()
    )
}

/// Polls `cond` every 10 ms until it holds; panics naming `what` after `within`.
pub fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The Go flag's peer (`seedpeer`), built by `../shared/peers/go-seed/build.sh` (from Debian's
/// Go packages, installed as root if missing); panics with the script's output if it cannot.
pub fn seedpeer() -> std::path::PathBuf {
    use std::path::PathBuf;
    use std::process::{Command, Stdio};
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/peers/go-seed/build.sh");
    let out = std::env::temp_dir().join("leadership-go-seed");
    let output = Command::new("bash")
        .arg(&script)
        .arg(&out)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "building seedpeer failed ({}):\n{}\n{}\nFix: the script needs Debian 12 and, if golang-go, \
         golang-github-lib-pq-dev and golang-github-prometheus-client-golang-dev are missing, \
         root or sudo to apt-get install them (run `bash {} {}` by hand to see the details).",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        script.display(),
        out.display()
    );
    let path = PathBuf::from(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()
            .unwrap_or("")
            .trim(),
    );
    assert!(
        path.is_file(),
        "build.sh did not print the binary's path: {}",
        path.display()
    );
    path
}

//! Batched checks (issue 28): what a `FlagSet` that sends its flags' checks as one statement
//! ([`sql::CHECK_BATCH`](leadership_core::sql::CHECK_BATCH)) costs the server, beside the
//! single checks (`FlagSetBuilder::batch(false)`) in the same run, on a durable server
//! (`fsync` and `synchronous_commit` on, data on disk).
//!
//! - `batch-group` ([`group`]): a balanced group of 256 shards over 8 `FlagSet`s (in this
//!   process, each on a runtime and a connection of its own), at 2 s and 30 s: statements/s,
//!   server CPU, `fdatasync`/s, transaction IDs/s, WAL bytes/s.
//! - `batch-load` ([`load`], [`sets`], `explain`, `statement`): how many flags one server
//!   sustains at the default interval with 10 processes per flag: a load generator that sends
//!   what such a fleet sends (one connection per process, one `CHECK_BATCH` per tick with the
//!   rows due), the cost per renew row and per follower row, `EXPLAIN (ANALYZE)` of single
//!   batches, and a cross-check with real `FlagSet`s (child processes).
//! - `batch-handover` ([`handover`]): handover (SIGTERM) and failover (kill -9) of one flag of
//!   a set of 100 per process, 2 processes, batched and not, beside one flag per process.
//!
//! ```sh
//! cargo run --release -p leadership-bench -- batch-group [--intervals 2s,30s] [--leases 8,2] [--rounds 3,1]
//! cargo run --release -p leadership-bench -- batch-load [--flags 10000,20000,…] [--ticks auto,1s] \
//!     [--variants as-is,jit-off,fixed] [--sets 10000] [--explain 100000,1000000]
//! cargo run --release -p leadership-bench -- batch-handover [--trials 30]
//! ```

use std::time::{Duration, Instant};

use crate::cost::counters::{lsn_bytes, server_ticks};
use leadership_pgkit::pg::{PgServer, ServerOptions};

mod explain;
pub(crate) mod group;
pub(crate) mod handover;
pub(crate) mod load;
mod process;
pub(crate) mod sets;
mod statement;

/// The role the measured clients log in as: `pg_stat_statements` counts its statements alone
/// (not the harness's own `psql` readings).
pub(crate) const ROLE: &str = "bench_sets";

/// A durable server (`fsync`, `synchronous_commit` on, data on disk) with planning times in
/// `pg_stat_statements`, the measured role, and the flags' table; `config` lines are added.
pub(crate) fn durable_server(config: &[String]) -> PgServer {
    let mut options = ServerOptions::new()
        .durable(true)
        .config("pg_stat_statements.track_planning = on");
    for line in config {
        options = options.config(line.clone());
    }
    let pg = PgServer::start_with(&options).expect("start PostgreSQL");
    pg.psql(&format!("create role {ROLE} superuser login"))
        .expect("create the role");
    pg.psql(&crate::peers::table()).expect("create the table");
    pg.psql("create extension if not exists pg_walinspect")
        .expect("pg_walinspect");
    pg
}

/// A connection string for the measured role.
pub(crate) fn conn_string(pg: &PgServer) -> String {
    format!(
        "host=127.0.0.1 port={} user={ROLE} dbname=postgres",
        pg.port()
    )
}

/// The server's settings that decide what a commit costs, for the report.
pub(crate) fn settings(pg: &PgServer) -> String {
    let s = pg
        .psql(
            "select string_agg(name || '=' || setting || coalesce(unit, ''), ', ' order by name) \
             from pg_settings where name in ('fsync', 'synchronous_commit', 'wal_sync_method', \
             'full_page_writes', 'shared_buffers', 'max_wal_size', 'checkpoint_timeout')",
        )
        .unwrap_or_default();
    format!(
        "{} (data dir {}): {}",
        pg.psql("select version()")
            .unwrap_or_default()
            .split(" on ")
            .next()
            .unwrap_or_default()
            .trim(),
        pg.data_dir().display(),
        s.trim()
    )
}

/// The server's counters at one instant: the measured role's statements, the table's writes,
/// transaction IDs, WAL, `fdatasync` calls and CPU.
#[derive(Clone, Debug)]
pub(crate) struct Reading {
    at: Instant,
    calls: f64,
    rows: f64,
    plan_ms: f64,
    exec_ms: f64,
    updated: f64,
    hot: f64,
    xid: f64,
    lsn: String,
    wal: f64,
    syncs: f64,
    ticks: f64,
}

impl Reading {
    pub(crate) fn take(pg: &PgServer) -> Reading {
        let s = pg
            .psql(&format!(
                "select (select coalesce(sum(calls), 0) || '|' || coalesce(sum(rows), 0) || '|' \
                 || coalesce(sum(total_plan_time), 0) || '|' || coalesce(sum(total_exec_time), 0) \
                 from pg_stat_statements s join pg_roles r on r.oid = s.userid \
                 where r.rolname = '{ROLE}'), \
                 (select coalesce(sum(n_tup_upd), 0) || '|' || coalesce(sum(n_tup_hot_upd), 0) \
                 from pg_stat_user_tables where relname = 'leadership_flags'), \
                 pg_snapshot_xmax(pg_current_snapshot()), pg_current_wal_insert_lsn(), \
                 (select wal_sync from pg_stat_wal)"
            ))
            .expect("read the counters");
        let f: Vec<&str> = s.trim().split('|').collect();
        let n = |i: usize| -> f64 { f[i].trim().parse().unwrap_or(0.0) };
        Reading {
            at: Instant::now(),
            calls: n(0),
            rows: n(1),
            plan_ms: n(2),
            exec_ms: n(3),
            updated: n(4),
            hot: n(5),
            xid: n(6),
            lsn: f[7].trim().to_string(),
            wal: lsn_bytes(f[7].trim()) as f64,
            syncs: n(8),
            ticks: server_ticks(pg) as f64,
        }
    }
}

/// What the server did between two readings, per second.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Rates {
    pub(crate) secs: f64,
    /// Statements of the measured role.
    pub(crate) statements: f64,
    /// Rows they returned (a batch returns one per flag, a single check one).
    pub(crate) rows: f64,
    /// Rows of the table updated (renews and takeovers), and of them HOT.
    pub(crate) updated: f64,
    pub(crate) hot: f64,
    pub(crate) xids: f64,
    pub(crate) wal: f64,
    pub(crate) syncs: f64,
    /// Server CPU, in cores (1.0 = one core busy).
    pub(crate) cpu: f64,
    /// Mean planning and execution time per statement, ms.
    pub(crate) plan_ms: f64,
    pub(crate) exec_ms: f64,
}

pub(crate) fn rates(a: &Reading, b: &Reading) -> Rates {
    let secs = b.at.duration_since(a.at).as_secs_f64();
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let per = |x: f64, y: f64| (y - x) / secs;
    let calls = (b.calls - a.calls).max(1.0);
    Rates {
        secs,
        statements: per(a.calls, b.calls),
        rows: per(a.rows, b.rows),
        updated: per(a.updated, b.updated),
        hot: per(a.hot, b.hot),
        xids: per(a.xid, b.xid),
        wal: per(a.wal, b.wal),
        syncs: per(a.syncs, b.syncs),
        cpu: per(a.ticks, b.ticks) / hz,
        plan_ms: (b.plan_ms - a.plan_ms) / calls,
        exec_ms: (b.exec_ms - a.exec_ms) / calls,
    }
}

/// Lets the backends report their statistics (at most once a second while they run), then
/// reads the counters.
pub(crate) fn settle_and_read(pg: &PgServer) -> Reading {
    std::thread::sleep(Duration::from_millis(1100));
    Reading::take(pg)
}

/// This process's CPU time so far (user + system), seconds: the clients' share of the machine.
pub(crate) fn own_cpu() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// Parses `2`, `2s`, `500ms`, `1m`, `0.5`: a duration, seconds when no unit is given.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let at = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, unit) = s.split_at(at);
    let v: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => v,
        "ms" => v / 1e3,
        "m" => v * 60.0,
        _ => return Err(format!("bad unit in {s:?} (ms, s or m)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// `1234567` as `1,234,567`.
pub(crate) fn thousands(n: f64) -> String {
    let s = format!("{:.0}", n);
    let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The WAL records written between two readings, by type, per `per` (e.g. per renew): the
/// types above 0.01 each.
pub(crate) fn records(pg: &PgServer, a: &Reading, b: &Reading, per: f64) -> String {
    let q = format!(
        "select \"resource_manager/record_type\", count from pg_get_wal_stats('{}', \
         least('{}'::pg_lsn, pg_current_wal_flush_lsn()), true) where count > 0 order by 2 desc",
        a.lsn, b.lsn
    );
    let mut out = Vec::new();
    for line in pg.psql(&q).unwrap_or_default().lines() {
        if let Some((kind, count)) = line.split_once('|') {
            let count: f64 = count.trim().parse().unwrap_or(0.0);
            if count / per >= 0.01 {
                out.push(format!("{kind} {:.2}", count / per));
            }
        }
    }
    out.join(", ")
}

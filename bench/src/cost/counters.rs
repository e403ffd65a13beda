//! What the server spent: its counters at one instant, and their difference per check.

use std::thread;
use std::time::Duration;

use leadership_pgkit::pg::PgServer;

/// The server's counters at one instant.
pub(super) struct Counters {
    pub(super) xid: i64,
    pub(super) lsn: String,
    pub(super) wal_sync: i64,
    pub(super) ticks: u64,
}

pub(super) fn counters(pg: &PgServer) -> Counters {
    let s = pg
        .psql(
            "select pg_snapshot_xmax(pg_current_snapshot()), pg_current_wal_insert_lsn(), \
             wal_sync from pg_stat_wal",
        )
        .expect("read counters");
    let f: Vec<&str> = s.trim().split('|').collect();
    Counters {
        xid: f[0].parse().unwrap(),
        lsn: f[1].to_string(),
        wal_sync: f[2].parse().unwrap(),
        ticks: server_ticks(pg),
    }
}

/// CPU ticks of the server: its live processes' ([`crate::fleet::server_ticks`]) and those of the
/// children the postmaster has reaped (`cutime + cstime`): pgbench's backends exit with it.
pub(crate) fn server_ticks(pg: &PgServer) -> u64 {
    let reaped = pg
        .server_pid()
        .and_then(|pm| std::fs::read_to_string(format!("/proc/{pm}/stat")).ok())
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(')')?;
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            Some(f.get(13)? + f.get(14)?)
        })
        .unwrap_or(0);
    crate::fleet::server_ticks(pg) + reaped
}

pub(crate) fn lsn_bytes(lsn: &str) -> i64 {
    let (hi, lo) = lsn.split_once('/').unwrap();
    (i64::from_str_radix(hi, 16).unwrap() << 32) + i64::from_str_radix(lo, 16).unwrap()
}

/// What the server spent between two readings, per check.
#[derive(Clone, Debug, Default)]
pub(super) struct Spent {
    pub(super) xids: f64,
    pub(super) wal: f64,
    pub(super) syncs: f64,
    pub(super) cpu_us: f64,
    pub(super) records: Vec<(String, f64)>,
}

pub(super) fn spent(pg: &PgServer, a: &Counters, checks: u64, records: bool) -> Spent {
    // The backends report WAL statistics when they exit; pgbench's have.
    thread::sleep(Duration::from_millis(300));
    let b = counters(pg);
    let n = checks.max(1) as f64;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut s = Spent {
        xids: (b.xid - a.xid) as f64 / n,
        wal: (lsn_bytes(&b.lsn) - lsn_bytes(&a.lsn)) as f64 / n,
        syncs: (b.wal_sync - a.wal_sync) as f64 / n,
        cpu_us: (b.ticks - a.ticks) as f64 / hz / n * 1e6,
        records: Vec::new(),
    };
    if records && b.lsn != a.lsn {
        let q = format!(
            "select \"resource_manager/record_type\", count from pg_get_wal_stats('{}', \
             least('{}'::pg_lsn, pg_current_wal_flush_lsn()), true) where count > 0",
            a.lsn, b.lsn
        );
        for line in pg.psql(&q).unwrap_or_default().lines() {
            if let Some((kind, count)) = line.split_once('|') {
                let count: f64 = count.trim().parse().unwrap_or(0.0);
                s.records.push((kind.to_string(), count / n));
            }
        }
    }
    s
}

pub(super) fn records_text(s: &Spent) -> String {
    let r: Vec<String> = s
        .records
        .iter()
        .filter(|(_, per)| *per >= 0.005)
        .map(|(k, per)| format!("{k} {per:.2}"))
        .collect();
    if r.is_empty() {
        "none".into()
    } else {
        r.join(", ")
    }
}

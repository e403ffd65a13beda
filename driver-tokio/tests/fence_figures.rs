//! Figures of the fence (issue 26), printed (run with `--nocapture`; `docs/benchmarks.md` has a
//! run): what it adds to a transaction (latency, server CPU, MultiXacts when many run at once),
//! and how long a takeover waits behind a fenced transaction left open past the lease. Every
//! figure is also checked loosely, so this file fails rather than prints nonsense.
//!
//! `LEADERSHIP_FIGURES_SECS` sets the seconds per pgbench run (default 5),
//! `LEADERSHIP_FIGURES_TRIALS` the takeover trials per hold (default 3).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use leadership_core::sql::{fence_literal, Statements, Table};
use leadership_pgkit::helpers::{psql, server};
use leadership_pgkit::pg::{tool_path, PgServer};
use leadership_pgkit::proxy::Proxy;
use leadership_tokio::{lease_clock_ns, Flag};
use tokio_postgres::NoTls;

fn env_or(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU ticks (1/100 s) of the server's processes that have exited: pgbench's backends, once
/// it is done.
fn reaped_ticks(pg: &PgServer) -> u64 {
    let pm = pg.server_pid().expect("postmaster");
    let stat = std::fs::read_to_string(format!("/proc/{pm}/stat")).unwrap();
    let (_, rest) = stat.rsplit_once(')').unwrap();
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    f[13] + f[14]
}

/// Runs pgbench with `script` for `secs` with `clients`; (transactions, latency ms, server CPU
/// µs per transaction).
fn pgbench(pg: &PgServer, dir: &Path, script: &str, clients: usize, secs: u64) -> (u64, f64, f64) {
    let file = dir.join("script.sql");
    std::fs::write(&file, script).unwrap();
    let before = reaped_ticks(pg);
    let pgbench = tool_path("pgbench").expect("pgbench");
    let o = Command::new(pgbench)
        .args(["-n", "-M", "prepared", "-c", &clients.to_string()])
        .args(["-j", &clients.min(2).to_string(), "-T", &secs.to_string()])
        .arg("-f")
        .arg(&file)
        .args(["-h", "127.0.0.1", "-p", &pg.port().to_string()])
        .args(["-U", pg.user(), "postgres"])
        .stdin(Stdio::null())
        .output()
        .expect("pgbench");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let find = |prefix: &str| -> f64 {
        let line = out.lines().find(|l| l.starts_with(prefix)).unwrap();
        line[prefix.len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let n = find("number of transactions actually processed: ") as u64;
    let latency = find("latency average = ");
    std::thread::sleep(Duration::from_millis(300)); // the backends are reaped
    let cpu_us = (reaped_ticks(pg) - before) as f64 * 10_000.0 / n as f64;
    (n, latency, cpu_us)
}

fn multixacts(pg: &PgServer) -> i64 {
    psql(pg, "CHECKPOINT");
    psql(
        pg,
        "select next_multixact_id::text::bigint from pg_control_checkpoint()",
    )
    .parse()
    .unwrap()
}

#[test]
fn what_the_fence_adds_to_a_transaction() {
    let pg = server();
    let secs = env_or("LEADERSHIP_FIGURES_SECS", 5);
    let table = Table::default();
    psql(&pg, &Statements::new(&table).create_table);
    psql(
        &pg,
        "create table effects (term bigint not null); \
         insert into leadership_flags values ('job', 'bench', 7, now() + interval '1 hour', 7)",
    );
    // A lease an hour long, so that it stays live through the runs.
    let fence = fence_literal(&table, "job", "bench", 7, 3_600_000_000);
    let dir = std::env::temp_dir().join(format!("leadership-fence-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plain = "BEGIN;\nINSERT INTO effects (term) VALUES (7);\nCOMMIT;\n".to_string();
    let fenced = format!(
        "BEGIN;\n{};\nINSERT INTO effects (term) VALUES (7);\nCOMMIT;\n",
        fence.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    println!("| transaction | clients | transactions | latency ms | server CPU µs per transaction | MultiXacts created |");
    println!("|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    for (label, script, clients) in [
        ("BEGIN; INSERT; COMMIT", &plain, 1),
        ("BEGIN; fence; INSERT; COMMIT", &fenced, 1),
        ("BEGIN; INSERT; COMMIT", &plain, 4),
        ("BEGIN; fence; INSERT; COMMIT", &fenced, 4),
    ] {
        let mx = multixacts(&pg);
        let (n, latency, cpu) = pgbench(&pg, &dir, script, clients, secs);
        let mx = multixacts(&pg) - mx;
        println!("| {label} | {clients} | {n} | {latency:.3} | {cpu:.0} | {mx} |");
        rows.push((n, latency, cpu, mx));
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(rows.iter().all(|r| r.0 > 0 && r.1 > 0.0));
    assert_eq!(rows[0].3, 0, "no row lock, no MultiXact");
    assert!(
        rows[3].3 > 0,
        "concurrent FOR SHARE lockers share the row through MultiXacts"
    );
    assert!(
        rows[1].1 < rows[0].1 * 5.0 + 5.0,
        "the fence is one index lookup and a lock: {rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn how_long_a_takeover_waits_behind_an_open_fenced_transaction() {
    let trials = env_or("LEADERSHIP_FIGURES_TRIALS", 3);
    let interval = Duration::from_secs(2);
    // Signed: the follower's check waiting for the lock wins at the commit, and its reply can
    // arrive before the committing client's own (both follow the same commit).
    println!("| held past the lease's expiry | trials | the follower leads after the commit, ms (min / median / max) |");
    println!("|---|---|---|");
    for hold_ms in [0u64, 500, 1500] {
        let mut waits = Vec::new();
        for _ in 0..trials {
            let pg = server();
            let proxy = Proxy::start(([127, 0, 0, 1], pg.port())).unwrap();
            let conn = |port: u16| {
                format!(
                    "host=127.0.0.1 port={port} user={} dbname=postgres",
                    pg.user()
                )
            };
            let start = |conn: String, process: &'static str| async move {
                Flag::builder("job", process)
                    .connect_str(&conn)
                    .interval(interval)
                    .timeout(Duration::from_millis(500))
                    .start(NoTls)
                    .await
                    .unwrap()
            };
            let a = start(conn(proxy.port()), "a").await;
            let guard = a.raised().await.unwrap();
            let b = start(conn(pg.port()), "b").await;
            let (mut db, task) = tokio_postgres::connect(&conn(pg.port()), NoTls)
                .await
                .unwrap();
            tokio::spawn(task);
            let tx = db.transaction().await.unwrap();
            guard.fence_in(&tx).await.expect("fenced");
            // a is cut off from the database: its lease ends at the row's timestamp + lease.
            proxy.black_hole(true).unwrap();
            let expiry_plus_hold = format!(
                "select clock_timestamp() >= \"timestamp\" + interval '{} ms' from leadership_flags",
                interval.as_millis() as u64 + hold_ms
            );
            loop {
                let done: bool = tx.query_one(&expiry_plus_hold, &[]).await.unwrap().get(0);
                if done {
                    break;
                }
                tx.execute("select pg_sleep(0.05)", &[]).await.unwrap();
            }
            tx.commit().await.expect("commits within the fence's bound");
            let committed = lease_clock_ns();
            let b_began = loop {
                if let Some(t) = b.terms().first() {
                    break t.began_ns;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            waits.push((b_began as f64 - committed as f64) / 1e6);
            assert!(
                b_began + 50_000_000 >= committed,
                "b began before the commit"
            );
            proxy.black_hole(false).unwrap();
            drop(guard);
            b.close().await.unwrap();
            let _ = a.close().await;
        }
        waits.sort_by(f64::total_cmp);
        println!(
            "| {hold_ms} ms | {trials} | {:.0} / {:.0} / {:.0} |",
            waits[0],
            waits[waits.len() / 2],
            waits[waits.len() - 1]
        );
        assert!(waits.iter().all(|&w| w < 5_000.0), "{waits:?}");
    }
}

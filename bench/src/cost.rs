//! `bench cost`: what a check costs the server, with `fsync = on` and `synchronous_commit = on`
//! (a [durable](leadership_pgkit::pg::ServerOptions::durable) server on disk), for our check,
//! the candidate not chosen, our check as it was before, and the Go flag's statements.
//!
//! 1. Per check: one client, one row, `--checks N` checks of each statement and role through
//!    `pgbench -c 1 -t N` (ours prepared, as both drivers do; the Go flag's over the extended
//!    protocol with unnamed statements, as lib/pq sends them). Around each run: transaction IDs
//!    (`pg_snapshot_xmax(pg_current_snapshot())`), WAL bytes (`pg_current_wal_insert_lsn()`),
//!    WAL records by type (`pg_walinspect`), `fdatasync` calls (`pg_stat_wal.wal_sync`), the
//!    server's CPU (`/proc` ticks of the postmaster and its children), pgbench's mean latency.
//!    A leader renews the version it holds (`\gset` carries the returned version over); the
//!    Go flag's leader runs `select now()`, the `select` of the row and its `UPDATE` with the
//!    values read, a follower the first two. Then whether a follower's check waits behind a
//!    row lock another transaction holds (`lock_timeout`).
//! 2. The ceiling: `pgbench -j 2` for `--secs` per run, on 1,000 and 10,000 flags, 16 and 64
//!    clients, a random flag per check: followers, leaders (ours take the row over with lease
//!    0: the same write as a renew; the Go flag's leader does its read and compare-and-set
//!    `UPDATE`), and the mix of a fleet of 10 processes per flag at the default interval.
//!    Besides checks/s: CPU, transaction IDs, WAL and fsyncs per check, and how many backends
//!    were waiting for a lock (`pg_stat_activity`, sampled every 200 ms).
//! 3. The fleet: the per-check figures times the schedule the core follows (the simulator,
//!    fault-free, a simulated day per fleet), beside the Go flag's; and what the server
//!    sustains at the default interval from the mix's ceiling.
//!
//! ```sh
//! cargo run --release -p leadership-bench --bin bench -- cost [--checks 5000] [--secs 10] \
//!     [--rounds 3] [--sizes 1000,10000] [--clients 16,64] [--who ours,a,before,go]
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use leadership_core::sql::{Statements, Table};
use leadership_pgkit::pg::{PgServer, ServerOptions};
use leadership_sim::check_variants::{self, BEFORE, GATED_INSERT};
use leadership_sim::sim::{self, SimConfig};

const PGBENCH: &str = "/usr/lib/postgresql/15/bin/pgbench";
/// A follower's lease: an hour, so the rows (written at most minutes ago) stay live.
const LONG_LEASE: &str = "3600000000";
/// `autovacuum_freeze_max_age`'s default: transaction IDs between anti-wraparound vacuums.
const FREEZE_MAX_AGE: f64 = 200e6;

/// Which statements make a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Who {
    /// `leadership_core::sql::CHECK`.
    Ours,
    /// Candidate A, the gated insert (`check_variants::GATED_INSERT`).
    GatedInsert,
    /// The check before issue 14 (`check_variants::BEFORE`).
    Before,
    /// The Go flag: `select now()`, the `select` of the row, the leader's `UPDATE`.
    Go,
}

impl Who {
    const ALL: [Who; 4] = [Who::Ours, Who::GatedInsert, Who::Before, Who::Go];

    fn label(self) -> &'static str {
        match self {
            Who::Ours => "ours (UPDATE + INSERT … DO NOTHING)",
            Who::GatedInsert => "candidate A (gated INSERT … DO UPDATE)",
            Who::Before => "ours before (INSERT … ON CONFLICT DO UPDATE)",
            Who::Go => "Go flag",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Who::Ours => "ours",
            Who::GatedInsert => "A",
            Who::Before => "before",
            Who::Go => "Go",
        }
    }

    /// pgbench's `-M`: ours prepared once per connection, the Go flag's as lib/pq sends them.
    fn mode(self) -> &'static str {
        if self == Who::Go {
            "extended"
        } else {
            "prepared"
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Leader,
    Follower,
}

/// A pgbench script of one check. `random`: the flag is random among `:nflags` rows and a
/// leader of ours takes it over (lease 0); otherwise the flag is `:n` and a leader renews the
/// version it holds, `:version`, which `\gset` replaces with the one its win returns.
fn script(who: Who, role: Role, random: bool) -> String {
    let mut s = String::new();
    if random {
        s.push_str("\\set n random(1, :nflags)\n");
    }
    let table = Table::new("leadership_flags").unwrap();
    let template = match who {
        Who::Ours => Statements::new(&table).check,
        Who::GatedInsert => check_variants::render(GATED_INSERT, &table),
        Who::Before => check_variants::render(BEFORE, &table),
        Who::Go => {
            // flag.go's text, pgbench's variables in place of lib/pq's parameters.
            s.push_str(if role == Role::Leader {
                "select now() \\gset\n"
            } else {
                "select now();\n"
            });
            s.push_str("select holder, version, timestamp from leadership_flags where name = :n");
            if role == Role::Follower {
                s.push_str(";\n");
                return s;
            }
            s.push_str(
                " \\gset\n\\set nv :version + 1\nupdate leadership_flags set version = :nv, \
                 timestamp = :now where name = :n and holder = :me and version = :version;\n",
            );
            return s;
        }
    };
    let (process, renew, lease, floor) = match (role, random) {
        (Role::Follower, _) => ("'p2'", "NULL", LONG_LEASE, "0"),
        (Role::Leader, true) => ("'p1'", "NULL", "0", "0"),
        (Role::Leader, false) => ("'p1'", "(:version)::bigint", LONG_LEASE, "(:floor)::bigint"),
    };
    let renews_held = role == Role::Leader && !random;
    let stmt = template
        .replace("$1", "(:n)::text")
        .replace("$2", process)
        .replace("$3", renew)
        .replace("$4", lease)
        .replace("$5", floor)
        .replace("$6", "true")
        .replace("$7", "true")
        // A renew continues the term the row names (5, from `one_row`); the rest start one.
        .replace("$8", if renews_held { "(5)::bigint" } else { "NULL" });
    let renews = role == Role::Leader && !random;
    if renews {
        s.push_str("\\set floor :version + 1\n");
    }
    // pgbench wants one command per line.
    s.push_str(&stmt.split_whitespace().collect::<Vec<_>>().join(" "));
    s.push_str(if renews { " \\gset\n" } else { ";\n" });
    s
}

/// What pgbench reported.
#[derive(Debug, Default)]
struct Pgbench {
    transactions: u64,
    tps: f64,
    latency_ms: f64,
    ok: bool,
    output: String,
}

#[allow(clippy::too_many_arguments)]
fn pgbench(
    pg: &PgServer,
    dir: &Path,
    scripts: &[(String, u32)],
    clients: usize,
    mode: &str,
    run: &[&str],
    defines: &[String],
    env: &[(&str, &str)],
) -> Pgbench {
    let mut cmd = Command::new(PGBENCH);
    cmd.args([
        "-n",
        "-c",
        &clients.to_string(),
        "-j",
        &clients.min(2).to_string(),
    ])
    .args(["-M", mode])
    .args(run);
    for d in defines {
        cmd.arg("-D").arg(d);
    }
    for (i, (text, weight)) in scripts.iter().enumerate() {
        let file = dir.join(format!("script{i}.sql"));
        std::fs::write(&file, text).unwrap();
        cmd.arg("-f").arg(format!("{}@{weight}", file.display()));
    }
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &pg.port().to_string(),
        "-U",
        "postgres",
        "postgres",
    ])
    .envs(env.iter().copied())
    .stdin(Stdio::null());
    let o = cmd.output().expect("run pgbench");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let find = |prefix: &str| -> Option<f64> {
        let line = out.lines().find(|l| l.starts_with(prefix))?;
        line[prefix.len()..]
            .split_whitespace()
            .next()?
            .split('/')
            .next()?
            .parse()
            .ok()
    };
    Pgbench {
        transactions: find("number of transactions actually processed: ").unwrap_or(0.0) as u64,
        tps: find("tps = ").unwrap_or(f64::NAN),
        latency_ms: find("latency average = ").unwrap_or(f64::NAN),
        ok: o.status.success() && !err.contains("aborted"),
        output: format!("{out}{err}"),
    }
}

/// The server's counters at one instant.
struct Counters {
    xid: i64,
    lsn: String,
    wal_sync: i64,
    ticks: u64,
}

fn counters(pg: &PgServer) -> Counters {
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

/// CPU ticks of the server: its live processes' ([`super::server_ticks`]) and those of the
/// children the postmaster has reaped (`cutime + cstime`): pgbench's backends exit with it.
fn server_ticks(pg: &PgServer) -> u64 {
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
    super::server_ticks(pg) + reaped
}

fn lsn_bytes(lsn: &str) -> i64 {
    let (hi, lo) = lsn.split_once('/').unwrap();
    (i64::from_str_radix(hi, 16).unwrap() << 32) + i64::from_str_radix(lo, 16).unwrap()
}

/// What the server spent between two readings, per check.
#[derive(Clone, Debug, Default)]
struct Spent {
    xids: f64,
    wal: f64,
    syncs: f64,
    cpu_us: f64,
    records: Vec<(String, f64)>,
}

fn spent(pg: &PgServer, a: &Counters, checks: u64, records: bool) -> Spent {
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

fn records_text(s: &Spent) -> String {
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

/// The single row of the per-check runs: `x`, held by `p1` at version 5, renewed now.
fn one_row(pg: &PgServer) -> i64 {
    pg.psql(
        "delete from leadership_flags; \
         insert into leadership_flags values ('x', 'p1', 5, now())",
    )
    .expect("reset the row");
    // Outside a transaction block, so in a psql call of its own.
    pg.psql("vacuum analyze leadership_flags").expect("vacuum");
    5
}

/// Whether a follower's check waits while another transaction holds the row (`FOR UPDATE`).
fn waits_behind_a_row_lock(pg: &PgServer, dir: &Path, who: Who) -> bool {
    one_row(pg);
    let mut holder = pg
        .psql_command()
        .arg("-c")
        .arg(
            "begin; select 1 from leadership_flags where name = 'x' for update; \
             select pg_sleep(1.5); commit;",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("psql");
    thread::sleep(Duration::from_millis(300));
    let b = pgbench(
        pg,
        dir,
        &[(script(who, Role::Follower, false), 1)],
        1,
        who.mode(),
        &["-t", "1"],
        &["n=x".into()],
        &[("PGOPTIONS", "-c lock_timeout=500")],
    );
    let _ = holder.wait();
    !b.ok || b.latency_ms > 400.0
}

/// Part 1: one client, one row.
fn per_check(
    pg: &PgServer,
    dir: &Path,
    checks: u64,
    out: &mut String,
) -> BTreeMap<(Who, &'static str), Spent> {
    let mut table = BTreeMap::new();
    let _ = writeln!(
        out,
        "### Per check: 1 client, one row, {} checks of each follower and {checks} of each leader, fsync and synchronous_commit on\n\n\
         | role | statements | transaction IDs | WAL bytes | WAL records | fdatasync | waits behind a row lock | server CPU µs | latency µs (1 client) |\n\
         |---|---|---|---|---|---|---|---|---|",
        checks * 4
    );
    for (role, name) in [
        (Role::Follower, "follower"),
        (Role::Leader, "leader (renew)"),
    ] {
        // Followers are cheap: more of them, for CPU ticks of 10 ms to count.
        let checks = if role == Role::Follower {
            checks * 4
        } else {
            checks
        };
        for who in Who::ALL {
            let version = one_row(pg);
            let defines = vec![
                "n=x".to_string(),
                "me=p1".into(),
                format!("version={version}"),
            ];
            let s = script(who, role, false);
            // Warm up: plans cached, hint bits set, the row's page pruned.
            pgbench(
                pg,
                dir,
                &[(s.clone(), 1)],
                1,
                who.mode(),
                &["-t", "200"],
                &defines,
                &[],
            );
            let version: i64 = pg
                .psql("select version from leadership_flags where name = 'x'")
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let defines = vec![
                "n=x".to_string(),
                "me=p1".into(),
                format!("version={version}"),
            ];
            let a = counters(pg);
            let b = pgbench(
                pg,
                dir,
                &[(s, 1)],
                1,
                who.mode(),
                &["-t", &checks.to_string()],
                &defines,
                &[],
            );
            let sp = spent(pg, &a, b.transactions, true);
            if !b.ok || b.transactions != checks {
                eprintln!("pgbench {who:?} {role:?}: {}", b.output);
            }
            let after: i64 = pg
                .psql("select version from leadership_flags where name = 'x'")
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let won = after - version;
            let expected = if role == Role::Leader {
                b.transactions as i64
            } else {
                0
            };
            assert_eq!(
                won, expected,
                "{who:?} {role:?}: {won} wins of {} checks",
                b.transactions
            );
            let waits = if role == Role::Follower {
                if waits_behind_a_row_lock(pg, dir, who) {
                    "yes"
                } else {
                    "no"
                }
            } else {
                "yes (it writes)"
            };
            let _ = writeln!(
                out,
                "| {name} | {} | {:.3} | {:.1} | {} | {:.3} | {waits} | {:.0} | {:.0} |",
                who.label(),
                sp.xids,
                sp.wal,
                records_text(&sp),
                sp.syncs,
                sp.cpu_us,
                b.latency_ms * 1000.0
            );
            table.insert(
                (
                    who,
                    if role == Role::Leader {
                        "leader"
                    } else {
                        "follower"
                    },
                ),
                sp,
            );
        }
    }
    table
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Load {
    Followers,
    Leaders,
    Mix,
}

impl Load {
    fn label(self) -> &'static str {
        match self {
            Load::Followers => "followers",
            Load::Leaders => "leaders",
            Load::Mix => "mix (10 processes per flag)",
        }
    }
}

/// Backends waiting for a lock, sampled every 200 ms by one psql (`\watch`) until dropped.
struct LockSampler {
    child: std::process::Child,
    samples: Arc<Mutex<Vec<(u32, u32)>>>,
}

impl LockSampler {
    fn start(pg: &PgServer) -> LockSampler {
        let mut child = pg
            .psql_command()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("psql");
        let mut stdin = child.stdin.take().unwrap();
        let _ = writeln!(
            stdin,
            "select count(*) filter (where wait_event_type = 'Lock'), count(*) \
             from pg_stat_activity where backend_type = 'client backend' and state = 'active' \
             and pid <> pg_backend_pid();\n\\watch 0.2"
        );
        // Kept open: psql stops at the end of its input.
        std::mem::forget(stdin);
        let samples: Arc<Mutex<Vec<(u32, u32)>>> = Arc::default();
        let out = child.stdout.take().unwrap();
        let s = Arc::clone(&samples);
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some((a, b)) = line.trim().split_once('|') {
                    if let (Ok(a), Ok(b)) = (a.parse(), b.parse()) {
                        s.lock().unwrap().push((a, b));
                    }
                }
            }
        });
        LockSampler { child, samples }
    }

    /// Mean backends waiting for a lock, mean active; stops sampling.
    fn finish(mut self) -> (f64, f64) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let s = self.samples.lock().unwrap();
        let n = s.len().max(1) as f64;
        (
            s.iter().map(|x| x.0 as f64).sum::<f64>() / n,
            s.iter().map(|x| x.1 as f64).sum::<f64>() / n,
        )
    }
}

/// One ceiling run.
#[derive(Clone, Copy, Debug, Default)]
struct Run {
    tps: f64,
    cpu_us: f64,
    xids: f64,
    wal: f64,
    syncs: f64,
    lock_waiting: f64,
    active: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Part 2: the ceiling; `rounds` runs of each cell, the statements interleaved (each round
/// starts with the next one), so that the machine's other load falls on all of them alike.
/// Returns the median checks/s of each cell.
#[allow(clippy::too_many_arguments)]
fn ceiling(
    pg: &PgServer,
    dir: &Path,
    sizes: &[usize],
    clients: &[usize],
    secs: u64,
    rounds: usize,
    who_list: &[Who],
    mix: (u32, u32, u32, u32),
    out: &mut String,
) -> BTreeMap<(usize, usize, Load, Who), f64> {
    let mut runs: BTreeMap<(usize, usize, Load, Who), Vec<Run>> = BTreeMap::new();
    for &n in sizes {
        pg.psql(&format!(
            "delete from leadership_flags; insert into leadership_flags \
             select i::text, 'p1', 0, now() from generate_series(1, {n}) i"
        ))
        .expect("fill the table");
        pg.psql("vacuum analyze leadership_flags").expect("vacuum");
        pg.psql("checkpoint").expect("checkpoint");
        for &c in clients {
            for load in [Load::Followers, Load::Leaders, Load::Mix] {
                for round in 0..rounds {
                    for i in 0..who_list.len() {
                        let who = who_list[(i + round) % who_list.len()];
                        let scripts = match load {
                            Load::Followers => vec![(script(who, Role::Follower, true), 1)],
                            Load::Leaders => vec![(script(who, Role::Leader, true), 1)],
                            Load::Mix => {
                                let (ol, of, gl, gf) = mix;
                                let (l, f) = if who == Who::Go { (gl, gf) } else { (ol, of) };
                                vec![
                                    (script(who, Role::Leader, true), l),
                                    (script(who, Role::Follower, true), f),
                                ]
                            }
                        };
                        let _ = pg.psql("vacuum leadership_flags");
                        let a = counters(pg);
                        let sampler = LockSampler::start(pg);
                        let b = pgbench(
                            pg,
                            dir,
                            &scripts,
                            c,
                            who.mode(),
                            &["-T", &secs.to_string()],
                            &[format!("nflags={n}"), "me=p1".into()],
                            &[],
                        );
                        let (lock_waiting, active) = sampler.finish();
                        if !b.ok {
                            eprintln!("pgbench {who:?} {load:?} {n} {c}: {}", b.output);
                        }
                        let sp = spent(pg, &a, b.transactions, false);
                        eprintln!(
                            "{n} flags, {c} clients, {load:?}, {who:?}: {:.0} checks/s",
                            b.tps
                        );
                        runs.entry((n, c, load, who)).or_default().push(Run {
                            tps: b.tps,
                            cpu_us: sp.cpu_us,
                            xids: sp.xids,
                            wal: sp.wal,
                            syncs: sp.syncs,
                            lock_waiting,
                            active,
                        });
                    }
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "\n### Ceiling: pgbench -j 2, {secs} s per run, {rounds} runs per cell (median, and the range), \
         a random flag per check, fsync and synchronous_commit on\n\n\
         | flags | clients | load | statements | checks/s (median) | range | server CPU µs/check | transaction IDs/check | WAL bytes/check | fdatasync/check | backends waiting for a lock (of active) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|"
    );
    let mut medians = BTreeMap::new();
    for (&(n, c, load, who), rs) in &runs {
        let mean = |f: fn(&Run) -> f64| rs.iter().map(f).sum::<f64>() / rs.len() as f64;
        let tps = median(rs.iter().map(|r| r.tps).collect());
        let (lo, hi) = rs.iter().fold((f64::MAX, 0.0f64), |(lo, hi), r| {
            (lo.min(r.tps), hi.max(r.tps))
        });
        let _ = writeln!(
            out,
            "| {n} | {c} | {} | {} | {tps:.0} | {lo:.0}–{hi:.0} | {:.0} | {:.3} | {:.1} | {:.3} | {:.1} of {:.1} |",
            load.label(),
            who.label(),
            mean(|r| r.cpu_us),
            mean(|r| r.xids),
            mean(|r| r.wal),
            mean(|r| r.syncs),
            mean(|r| r.lock_waiting),
            mean(|r| r.active)
        );
        medians.insert((n, c, load, who), tps);
    }
    let _ = writeln!(
        out,
        "\n| flags | clients | load | ours | A | before | Go flag | ours / before | ours / Go |\n|---|---|---|---|---|---|---|---|---|"
    );
    for &n in sizes {
        for &c in clients {
            for load in [Load::Followers, Load::Leaders, Load::Mix] {
                let tps = |w: Who| medians.get(&(n, c, load, w)).copied().unwrap_or(f64::NAN);
                let _ = writeln!(
                    out,
                    "| {n} | {c} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2}× | {:.2}× |",
                    load.label(),
                    tps(Who::Ours),
                    tps(Who::GatedInsert),
                    tps(Who::Before),
                    tps(Who::Go),
                    tps(Who::Ours) / tps(Who::Before),
                    tps(Who::Ours) / tps(Who::Go)
                );
            }
        }
    }
    medians
}

/// Checks per day of one leader and of one follower, as the simulator's fault-free day
/// counts them with the core's default settings for `interval`; the Go flag's per process.
struct Schedule {
    leader: f64,
    follower: f64,
    go: f64,
    renew: Duration,
}

fn schedule(interval: Duration) -> Schedule {
    let core = leadership_core::Config::builder("f", "p")
        .interval(interval)
        .build()
        .expect("the default settings");
    let day = Duration::from_secs(86_400);
    let run = |processes: usize, go_peers: usize| {
        sim::run(&SimConfig {
            seed: 1,
            processes,
            go_peers,
            duration: day,
            interval,
            timeout: core.timeout(),
            stop_ahead: Some(core.stop_ahead()),
            ..SimConfig::default()
        })
        .stats
    };
    let one = run(1, 0);
    let three = run(3, 0);
    let go = run(0, 3);
    Schedule {
        leader: one.checks as f64,
        follower: (three.checks - one.checks) as f64 / 2.0,
        go: go.go_checks as f64 / 3.0,
        renew: core.renew_interval(),
    }
}

fn si(x: f64) -> String {
    let (v, unit) = if x >= 1e12 {
        (x / 1e12, " T")
    } else if x >= 1e9 {
        (x / 1e9, " G")
    } else if x >= 1e6 {
        (x / 1e6, " M")
    } else if x >= 1e3 {
        (x / 1e3, " k")
    } else {
        (x, " ")
    };
    format!("{v:.3}{unit}")
        .replace(".000", "")
        .trim_end()
        .to_string()
}

fn period(xids_per_day: f64) -> String {
    if xids_per_day <= 0.0 {
        return "never".into();
    }
    let hours = FREEZE_MAX_AGE / xids_per_day * 24.0;
    if hours < 1.0 {
        format!("{:.0} min", hours * 60.0)
    } else if hours < 48.0 {
        format!("{hours:.1} h")
    } else if hours < 24.0 * 365.0 * 2.0 {
        format!("{:.0} days", hours / 24.0)
    } else {
        format!("{:.0} years", hours / 24.0 / 365.0)
    }
}

/// Part 3: the fleet.
fn fleet(
    costs: &BTreeMap<(Who, &'static str), Spent>,
    ceilings: &BTreeMap<(usize, usize, Load, Who), f64>,
    out: &mut String,
) {
    let intervals = [Duration::from_secs(2), Duration::from_secs(30)];
    let schedules: Vec<Schedule> = intervals.iter().map(|&i| schedule(i)).collect();
    let _ = writeln!(
        out,
        "\n### The schedule (simulator, fault-free, one simulated day, the core's default settings)\n\n\
         | interval | renew interval | leader checks/day | follower checks/day | Go flag checks/day per process |\n|---|---|---|---|---|"
    );
    for (i, s) in intervals.iter().zip(&schedules) {
        let _ = writeln!(
            out,
            "| {:?} | {:?} | {:.0} | {:.0} | {:.0} |",
            i, s.renew, s.leader, s.follower, s.go
        );
    }
    let cost = |who: Who, role: &'static str| costs.get(&(who, role)).cloned().unwrap_or_default();
    let _ = writeln!(
        out,
        "\n### Fleet cost per day (per-check figures above × the schedule)\n\n\
         | flags × processes | interval | transaction IDs/day: ours | Go flag | before | WAL/day: ours | Go flag | before | anti-wraparound vacuum every: ours | Go flag | before |\n\
         |---|---|---|---|---|---|---|---|---|---|---|"
    );
    for flags in [100.0, 10_000.0, 100_000.0] {
        for processes in [3.0, 10.0] {
            for (interval, s) in intervals.iter().zip(&schedules) {
                let per_day = |who: Who| {
                    let (lead, follow) = if who == Who::Go {
                        (s.go, (processes - 1.0) * s.go)
                    } else {
                        (s.leader, (processes - 1.0) * s.follower)
                    };
                    let (l, f) = (cost(who, "leader"), cost(who, "follower"));
                    (
                        flags * (lead * l.xids + follow * f.xids),
                        flags * (lead * l.wal + follow * f.wal),
                    )
                };
                let (ours, go, before) =
                    (per_day(Who::Ours), per_day(Who::Go), per_day(Who::Before));
                let _ = writeln!(
                    out,
                    "| {} × {} | {:?} | {} | {} | {} | {}B | {}B | {}B | {} | {} | {} |",
                    si(flags),
                    processes,
                    interval,
                    si(ours.0),
                    si(go.0),
                    si(before.0),
                    si(ours.1),
                    si(go.1),
                    si(before.1),
                    period(ours.0),
                    period(go.0),
                    period(before.0)
                );
            }
        }
    }
    // What one server sustains at the default interval, from the mix's ceiling.
    let s30 = &schedules[1];
    let _ = writeln!(
        out,
        "\n### What this server sustains at the default interval (30 s), 10 processes per flag, from the mix's ceiling\n\n\
         | flags | clients | statements | mix checks/s | checks/s per flag | flags sustained | processes sustained |\n|---|---|---|---|---|---|---|"
    );
    for (&(n, c, load, who), &tps) in ceilings {
        if load != Load::Mix || who == Who::GatedInsert {
            continue;
        }
        let per_flag = if who == Who::Go {
            10.0 * s30.go / 86_400.0
        } else {
            (s30.leader + 9.0 * s30.follower) / 86_400.0
        };
        let flags = tps / per_flag;
        let _ = writeln!(
            out,
            "| {n} | {c} | {} | {:.0} | {:.4} | {} | {} |",
            who.short(),
            tps,
            per_flag,
            si(flags),
            si(flags * 10.0)
        );
    }
}

/// `bench cost`'s options.
#[derive(clap::Args, Clone, Debug)]
pub struct Options {
    /// Checks per statement shape in part 1 (per-check costs).
    #[arg(long, default_value_t = 5000)]
    checks: u64,
    /// Seconds per pgbench run in part 2 (the ceiling).
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// pgbench runs per point (the best is kept).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Numbers of flags in the table.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    sizes: Vec<usize>,
    /// pgbench clients.
    #[arg(long, value_delimiter = ',', default_value = "16,64")]
    clients: Vec<usize>,
    /// Which checks to compare (ours, go, before, ...; default: all).
    #[arg(long, value_delimiter = ',')]
    who: Vec<String>,
}

/// `bench cost`: parts 1 to 3 on one durable server; prints markdown.
pub fn run(options: &Options) {
    let Options {
        checks,
        secs,
        rounds,
        sizes,
        clients,
        who,
    } = options.clone();
    let who_list: Vec<Who> = if who.is_empty() {
        Who::ALL.to_vec()
    } else {
        who.iter()
            .filter_map(|w| {
                Who::ALL
                    .into_iter()
                    .find(|x| x.short().eq_ignore_ascii_case(w))
            })
            .collect()
    };
    let started = Instant::now();
    let pg = PgServer::start_with(&ServerOptions::new().durable(true)).expect("start PostgreSQL");
    pg.psql(&super::table()).expect("create the table");
    pg.psql("create extension if not exists pg_walinspect")
        .expect("pg_walinspect");
    let settings = pg
        .psql("select string_agg(name || '=' || setting, ', ' order by name) from pg_settings where name in ('fsync', 'synchronous_commit', 'wal_sync_method', 'full_page_writes', 'autovacuum', 'wal_level', 'checkpoint_timeout')")
        .unwrap_or_default();
    let dir: PathBuf =
        std::env::temp_dir().join(format!("leadership-bench-cost-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let mut out = format!(
        "## cost\n\nServer: {} (data dir {}), {}\n\n",
        pg.psql("select version()").unwrap_or_default().trim(),
        pg.data_dir().display(),
        settings.trim()
    );
    let costs = per_check(&pg, &dir, checks, &mut out);
    print!("{out}");
    let _ = std::io::stdout().flush();
    let mut more = String::new();
    // The mix of a fleet of 10 processes per flag at 30 s: per lease, ours one leader renews
    // twice and nine followers check once (2:9); the Go flag's ten each check twice (2:18).
    let ceilings = ceiling(
        &pg,
        &dir,
        &sizes,
        &clients,
        secs,
        rounds,
        &who_list,
        (2, 9, 1, 9),
        &mut more,
    );
    fleet(&costs, &ceilings, &mut more);
    print!("{more}");
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("total {:.0} s", started.elapsed().as_secs_f64());
}

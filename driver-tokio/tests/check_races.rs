//! The check under concurrency on a real server: several clients on one flag with very short
//! leases, for a few seconds, each renewing what it won for a while, then letting it lapse (a
//! crash, a pause), and checking again a moment later when it lost.
//!
//! An `AFTER UPDATE` trigger logs every change of the row, in the order the row lock gave them,
//! and each client keeps the wins it was told of. From the two:
//! - versions never repeat or go back: each change replaced the row the previous change left
//!   and wrote a higher version, its version + 1 for a renewal (a new term of ours jumps to the
//!   server's clock, issue 25; the floors the clients pass never exceed that);
//! - no version is won twice, and each win a client was told of is that client's change;
//! - no early takeover: a change of holder, or a win that did not renew, replaced a row whose
//!   lease had expired by the winner's `now()` (`timestamp < now - lease`, the Go flag's rule).
//!
//! A statement that decides on its snapshot and does not re-test under the row lock
//! ([`check_variants::NO_RECHECK`]) is caught by the same checks: the proof that they can fail.
//! The batch (`sql::CHECK_BATCH`, issue 28) runs beside the single check on the same row, with
//! three more rows every batch client also takes, in orders drawn per batch; a batch whose
//! `UPDATE` does not re-test under the lock ([`Kind::BatchNoRecheck`]) is caught the same way.
//! The rolling upgrade runs processes on the check as it was before
//! ([`check_variants::BEFORE`]), processes on ours and the Go flag's peers on one flag.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use leadership_core::sql::{Statements, Table};
use leadership_pgkit::helpers::{psql, seedpeer, server};
use leadership_pgkit::pg::PgServer;
use leadership_sim::check_variants::{self, BEFORE, NO_RECHECK};
use leadership_tokio::internal::PgTime;
use postgres::types::ToSql;
use postgres::{Client, NoTls};

const FLAG: &str = "flag";
const MS: i64 = 1000;

/// Which text of the check a client runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `leadership_core::sql::CHECK`.
    Ours,
    /// The check before it wrote only when it wins (four parameters).
    Before,
    /// Broken: no re-test under the lock.
    NoRecheck,
    /// `leadership_core::sql::CHECK_BATCH`: the flag in a batch with the other clients' flags
    /// `aux-0` to `aux-2`, in an order drawn for each batch (a row locked by another batch is
    /// skipped: not attempted, and tried again).
    Batch,
    /// Broken: the batch's `UPDATE` writes every row it locked, without re-testing the
    /// condition on the newest version (the candidates were judged on the snapshot).
    BatchNoRecheck,
}

impl Kind {
    fn text(self) -> String {
        let table = Table::default();
        match self {
            Kind::Ours => Statements::new(&table).check,
            Kind::Before => check_variants::render(BEFORE, &table),
            Kind::NoRecheck => check_variants::render(NO_RECHECK, &table),
            Kind::Batch => Statements::new(&table).check_batch,
            Kind::BatchNoRecheck => {
                let text = Statements::new(&table).check_batch;
                let locked = "flag.name IN (SELECT name FROM locked)";
                let from = text.find(locked).expect("the update's lock") + locked.len();
                let to = from + text[from..].find("RETURNING").expect("its RETURNING");
                format!("{}\n    {}", &text[..from], &text[to..])
            }
        }
    }
}

/// A win a client was told of.
#[derive(Clone, Debug)]
struct Win {
    process: String,
    renew: Option<i64>,
    version: i64,
    timestamp: i64,
}

/// The row before or after a change, timestamps in Unix microseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Row {
    holder: String,
    version: i64,
    timestamp: i64,
}

/// One change of the row, from the trigger.
#[derive(Clone, Debug)]
struct Change {
    old: Row,
    new: Row,
}

const SETUP: &str = r#"
create table if not exists flag_log (
    seq bigserial primary key,
    old_holder text, old_version bigint, old_ts timestamptz,
    new_holder text, new_version bigint, new_ts timestamptz
);
create or replace function log_flag_change() returns trigger language plpgsql as $$
begin
    insert into flag_log (old_holder, old_version, old_ts, new_holder, new_version, new_ts)
    values (OLD.holder, OLD.version, OLD."timestamp", NEW.holder, NEW.version, NEW."timestamp");
    return null;
end $$;
drop trigger if exists log_flag_change on leadership_flags;
create trigger log_flag_change after update on leadership_flags
    for each row when (NEW.name = 'flag') execute function log_flag_change();
"#;

/// The table, the log and the row: version 0, held by nobody, expired long ago.
fn prepare(server: &PgServer) -> Row {
    psql(server, &Statements::new(&Table::default()).create_table);
    psql(server, SETUP);
    psql(
        server,
        "delete from leadership_flags; truncate flag_log; insert into leadership_flags \
         values ('flag', 'nobody', 0, now() - interval '1 day')",
    );
    let mut c = Client::connect(&server.conn_string(), NoTls).unwrap();
    let r = c
        .query_one(
            "select holder, version, \"timestamp\" from leadership_flags where name = 'flag'",
            &[],
        )
        .unwrap();
    Row {
        holder: r.get(0),
        version: r.get(1),
        timestamp: r.get::<_, PgTime>(2).0.as_unix_micros(),
    }
}

/// A tiny PRNG (xorshift), seeded per client.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// One client: checks until `until`; renews what it won (three times in four) after a quarter
/// lease, or lets it lapse for two leases; after a loss, checks again within a quarter lease.
/// Passes floor = the highest version it has seen + 1, as the core does. Returns its wins.
fn client(conn: String, process: String, kind: Kind, lease: i64, until: Instant) -> Vec<Win> {
    let mut c = Client::connect(&conn, NoTls).expect("client connects");
    let check = c.prepare(&kind.text()).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ process.bytes().map(u64::from).sum::<u64>() << 7);
    let (mut held, mut highest): (Option<i64>, Option<i64>) = (None, None);
    // The term a renew of `held` continues, as the core tracks it.
    let mut term: Option<i64> = None;
    let mut wins = Vec::new();
    let pause = |us: u64| thread::sleep(Duration::from_micros(us));
    while Instant::now() < until {
        let floor = highest.map_or(0, |v| v + 1);
        let continues = held.and(term);
        // No server expected (NULLs): this test is about the row, on one server.
        let (system, timeline, started): (Option<String>, Option<i32>, Option<PgTime>) =
            (None, None, None);
        let all: [&(dyn ToSql + Sync); 11] = [
            &FLAG, &process, &held, &lease, &floor, &true, &true, &continues, &system, &timeline,
            &started,
        ];
        let r = if matches!(kind, Kind::Batch | Kind::BatchNoRecheck) {
            // The flag among three others every batch client also checks (taking them over
            // as their 20 ms leases lapse), in a drawn order.
            let mut names = vec![FLAG, "aux-0", "aux-1", "aux-2"];
            names.rotate_left(rng.below(4) as usize);
            if rng.below(2) == 0 {
                names.reverse();
            }
            let of = |f: Option<i64>, other: Option<i64>| -> Vec<Option<i64>> {
                names
                    .iter()
                    .map(|n| if *n == FLAG { f } else { other })
                    .collect()
            };
            let (renew, conts) = (of(held, None), of(continues, None));
            let floors: Vec<i64> = names
                .iter()
                .map(|n| if *n == FLAG { floor } else { 0 })
                .collect();
            let yes = vec![true; names.len()];
            let all: [&(dyn ToSql + Sync); 11] = [
                &names, &process, &renew, &lease, &floors, &yes, &yes, &conts, &system, &timeline,
                &started,
            ];
            let rows = c.query(&check, &all).expect("the batch");
            let r = rows
                .into_iter()
                .find(|r| r.get::<_, String>("name") == FLAG)
                .expect("the flag's row");
            if !r.get::<_, bool>("attempted") {
                // Another batch held the row's lock: nothing was tried; try again soon, still
                // holding what we held.
                pause(rng.below(lease as u64 / 8));
                continue;
            }
            r
        } else {
            // Each text takes the parameters it names: the check before 4, the variants 6, ours 11.
            let params = &all[..check.params().len()];
            c.query_one(&check, params).expect("the check")
        };
        let (won, version): (bool, Option<i64>) = (r.get("won"), r.get("version"));
        highest = highest.max(version);
        if won {
            let version = version.expect("a win has a version");
            term = match held {
                Some(h) if h + 1 == version => term,
                _ => Some(version),
            };
            wins.push(Win {
                process: process.clone(),
                renew: held,
                version,
                timestamp: r.get::<_, PgTime>("timestamp").0.as_unix_micros(),
            });
            if rng.below(4) > 0 {
                held = Some(version);
                pause(lease as u64 / 4);
            } else {
                held = None;
                pause(lease as u64 * 2);
            }
        } else {
            held = None;
            pause(rng.below(lease as u64 / 4));
        }
    }
    wins
}

fn changes(server: &PgServer) -> Vec<Change> {
    let mut c = Client::connect(&server.conn_string(), NoTls).unwrap();
    c.query(
        "select old_holder, old_version, old_ts, new_holder, new_version, new_ts \
         from flag_log order by seq",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| Change {
        old: Row {
            holder: r.get(0),
            version: r.get(1),
            timestamp: r.get::<_, PgTime>(2).0.as_unix_micros(),
        },
        new: Row {
            holder: r.get(3),
            version: r.get(4),
            timestamp: r.get::<_, PgTime>(5).0.as_unix_micros(),
        },
    })
    .collect()
}

/// What the run showed.
#[derive(Debug, Default)]
struct Verdict {
    changes: usize,
    takeovers: usize,
    renews: usize,
    violations: Vec<String>,
}

/// Checks the log and the wins against the three rules (module docs).
fn judge(start: &Row, log: &[Change], wins: &[Win], lease: i64) -> Verdict {
    let mut v = Verdict {
        changes: log.len(),
        ..Verdict::default()
    };
    let mut told: BTreeMap<i64, Vec<&Win>> = BTreeMap::new();
    for w in wins {
        told.entry(w.version).or_default().push(w);
    }
    for (version, ws) in &told {
        if ws.len() > 1 {
            v.violations
                .push(format!("version {version} won {} times: {ws:?}", ws.len()));
        }
    }
    let mut prev = start.clone();
    for (i, c) in log.iter().enumerate() {
        if c.old != prev {
            v.violations.push(format!(
                "change {i} replaced {:?}, not the newest row {prev:?}",
                c.old
            ));
        }
        let win = told.get(&c.new.version).and_then(|ws| ws.first());
        let renewed =
            c.new.holder == c.old.holder && win.is_none_or(|w| w.renew == Some(c.old.version));
        if c.new.version <= c.old.version || (renewed && c.new.version != c.old.version + 1) {
            v.violations.push(format!(
                "change {i} wrote version {} over {}",
                c.new.version, c.old.version
            ));
        }
        if renewed {
            v.renews += 1;
        } else {
            v.takeovers += 1;
            if c.old.timestamp >= c.new.timestamp - lease {
                v.violations.push(format!(
                    "early takeover, change {i}: {} took version {} at {} µs of a {} µs lease \
                     written by {}",
                    c.new.holder,
                    c.new.version,
                    c.new.timestamp - c.old.timestamp,
                    lease,
                    c.old.holder
                ));
            }
        }
        if let Some(w) = win {
            if (w.process.as_str(), w.timestamp) != (c.new.holder.as_str(), c.new.timestamp) {
                v.violations
                    .push(format!("change {i} {:?} is not the win told: {w:?}", c.new));
            }
        }
        prev = c.new.clone();
    }
    let written: std::collections::BTreeSet<i64> = log.iter().map(|c| c.new.version).collect();
    for w in wins {
        if !written.contains(&w.version) {
            v.violations
                .push(format!("told of a win the row never had: {w:?}"));
        }
    }
    v
}

/// Runs `kinds` (one client each) on a fresh server for `secs`; also `go` Go flag peers with
/// interval = the lease, the holder among them paused now and then so that the lease moves.
fn run(kinds: &[Kind], go: usize, lease: i64, secs: u64) -> Verdict {
    let server = server();
    let start = prepare(&server);
    let until = Instant::now() + Duration::from_secs(secs);
    let mut peers = GoPeers(Vec::new());
    if go > 0 {
        let bin = seedpeer();
        for i in 1..=go {
            let child = Command::new(&bin)
                .args(["-url", &server.url(), "-name", FLAG])
                .args(["-process", &format!("go{i}")])
                .args(["-interval", &format!("{}ms", lease / MS)])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn seedpeer");
            peers.0.push((format!("go{i}"), child));
        }
    }
    let clients: Vec<_> = kinds
        .iter()
        .enumerate()
        .map(|(i, &kind)| {
            let conn = server.conn_string();
            let process = format!("{kind:?}{i}").to_lowercase();
            thread::spawn(move || client(conn, process, kind, lease, until))
        })
        .collect();
    while go > 0 && Instant::now() < until {
        thread::sleep(Duration::from_micros(lease as u64 * 2));
        let holder = psql(&server, "select holder from leadership_flags");
        if let Some((_, child)) = peers.0.iter().find(|(p, _)| *p == holder) {
            // SIGSTOP for three leases: its lease expires, and it resumes believing it holds.
            unsafe { libc::kill(child.id() as i32, libc::SIGSTOP) };
            thread::sleep(Duration::from_micros(lease as u64 * 3));
            unsafe { libc::kill(child.id() as i32, libc::SIGCONT) };
        }
    }
    let wins: Vec<Win> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("a client panicked"))
        .collect();
    drop(peers);
    let verdict = judge(&start, &changes(&server), &wins, lease);
    let mut takers: BTreeMap<String, usize> = BTreeMap::new();
    for c in changes(&server) {
        if c.old.holder != c.new.holder {
            let kind = c.new.holder.trim_end_matches(|c: char| c.is_ascii_digit());
            *takers.entry(kind.to_string()).or_default() += 1;
        }
    }
    println!(
        "{kinds:?} + {go} Go peers, lease {} ms, {secs} s: {} changes ({} renews, {} takeovers; \
         changes of holder by kind {takers:?}), {} wins told, {} violations",
        lease / MS,
        verdict.changes,
        verdict.renews,
        verdict.takeovers,
        wins.len(),
        verdict.violations.len()
    );
    for line in verdict.violations.iter().take(5) {
        println!("  {line}");
    }
    verdict
}

/// Go peers, killed when the run ends however it ends.
struct GoPeers(Vec<(String, Child)>);

impl Drop for GoPeers {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            // Our own children, not yet waited for: the pids cannot have been reused.
            unsafe { libc::kill(c.id() as i32, libc::SIGCONT) };
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn assert_clean(v: &Verdict) {
    assert!(
        v.violations.is_empty(),
        "{} violations, the first: {:#?}",
        v.violations.len(),
        &v.violations[..v.violations.len().min(10)]
    );
    // The run must have exercised both paths, or it proves nothing.
    assert!(
        v.takeovers >= 10 && v.renews >= 10,
        "too little happened: {v:?}"
    );
}

#[test]
fn under_contention_versions_never_skip_or_repeat_and_no_takeover_is_early() {
    let v = run(&[Kind::Ours; 8], 0, 20 * MS, 3);
    assert_clean(&v);
}

#[test]
fn batches_beside_single_checks_never_skip_or_repeat_a_version_and_no_takeover_is_early() {
    let kinds = [
        Kind::Batch,
        Kind::Ours,
        Kind::Batch,
        Kind::Batch,
        Kind::Ours,
        Kind::Batch,
        Kind::Batch,
        Kind::Ours,
    ];
    let v = run(&kinds, 0, 20 * MS, 3);
    assert_clean(&v);
}

#[test]
fn a_batch_that_does_not_retest_under_the_lock_is_caught() {
    let v = run(&[Kind::BatchNoRecheck; 8], 0, 20 * MS, 3);
    assert!(
        v.violations.iter().any(|l| l.starts_with("early takeover")),
        "the broken batch went unnoticed: {v:?}"
    );
}

#[test]
fn a_check_that_does_not_retest_under_the_lock_is_caught() {
    let v = run(&[Kind::NoRecheck; 8], 0, 20 * MS, 3);
    assert!(
        v.violations.iter().any(|l| l.starts_with("early takeover")),
        "the broken check went unnoticed: {v:?}"
    );
}

#[test]
fn a_rolling_upgrade_with_the_check_before_and_go_peers_is_safe() {
    let kinds = [
        Kind::Before,
        Kind::Ours,
        Kind::Before,
        Kind::Ours,
        Kind::Before,
        Kind::Ours,
    ];
    let v = run(&kinds, 2, 50 * MS, 5);
    assert_clean(&v);
}

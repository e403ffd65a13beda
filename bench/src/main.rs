//! Benchmarks against real PostgreSQL, side by side with the Go flag (`seedpeer`, built from
//! `../shared/peers/go-seed`): every scenario runs the same harness over one implementation's
//! peer processes, which all print `seedpeer`'s JSON lines.
//!
//! ```sh
//! cargo run --release -p leadership-bench --bin bench -- <scenario> [--impl go,tokio,blocking,cli] \
//!     [--trials N] [--csv FILE]
//! cargo run --release -p leadership-bench --bin bench -- plot --csv FILE --svg OUT.svg
//! cargo run --release -p leadership-bench --bin bench -- <scenario> --help   # its options
//! ```
//!
//! Scenarios: `statements` (per check, pg_stat_statements with one role per peer, and client
//! socket writes with strace), `failover` (kill -9 the leader), `handover` (SIGTERM the leader),
//! `pause` (SIGSTOP the leader 5 s), `hung` (SIGSTOP the leader's backends 10 s), `coldstart`
//! (8 peers at once on an empty database), `memory` (RSS with 1 and 100 flags), `fleet`
//! (server statements/s and CPU for N flags), `ceiling` (pgbench, checks/s), `cost` (what a check
//! costs the server with fsync on: transaction IDs, WAL, fsyncs, CPU, lock waits, the ceiling,
//! the fleet per day; `cost.rs`), `all` (the first six).
//!
//! Each run starts its own throwaway PostgreSQL (`leadership_pgkit::pg`). The Rust peers are
//! the `tokio_peer` and `blocking_peer` examples of the two drivers, built here with cargo;
//! `cli` is `leadership watch`, which prints the same lines.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use leadership_pgkit::pg::{PgServer, Signal};

mod cost;

const FLAG: &str = "seed";
const MS: f64 = 1e6;
/// The flags table as our processes create it (the Go flag's columns and the term column).
fn table() -> String {
    leadership_core::sql::Statements::new(&leadership_core::sql::Table::default()).create_table
}

fn unix_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

fn sleep_ms(ms: u64) {
    thread::sleep(Duration::from_millis(ms));
}

// ---------------------------------------------------------------- peers

#[derive(Clone, Debug)]
struct Event {
    /// Which spawn of which slot printed it.
    slot: usize,
    gen: usize,
    t: i64,
    raised: bool,
    deadline: Option<i64>,
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &line[at..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"'))
}

struct Impl {
    name: String,
    bin: PathBuf,
}

struct Peer {
    child: Child,
    gen: usize,
}

/// Peers `p1..pN`, each logging in as its own superuser role of the same name.
struct Fleet {
    imp: Arc<Impl>,
    port: u16,
    peers: Vec<Option<Peer>>,
    events: Arc<Mutex<Vec<Event>>>,
    next_gen: usize,
    extra: Vec<String>,
}

impl Fleet {
    fn new(imp: &Arc<Impl>, pg: &PgServer, n: usize) -> Fleet {
        for i in 1..=n {
            let _ = pg.psql(&format!("create role p{i} superuser login"));
        }
        // The Go flag's Build() fails when peers create the table at once (the cold start
        // figure): every other scenario starts with the table in place.
        let _ = pg.psql(&table());
        Fleet {
            imp: Arc::clone(imp),
            port: pg.port(),
            peers: (0..n).map(|_| None).collect(),
            events: Arc::default(),
            next_gen: 0,
            extra: Vec::new(),
        }
    }

    fn url(&self, slot: usize) -> String {
        format!(
            "postgres://p{}@127.0.0.1:{}/postgres?sslmode=disable",
            slot + 1,
            self.port
        )
    }

    fn spawn(&mut self, slot: usize) {
        let gen = self.next_gen;
        self.next_gen += 1;
        let dash = if self.imp.name == "go" { "-" } else { "--" };
        let mut cmd = Command::new(&self.imp.bin);
        if self.imp.name == "cli" {
            // `leadership watch` prints the same lines as the peers, driven by the flag's
            // streams: it has no poll period.
            cmd.arg("watch");
        }
        cmd.arg(format!("{dash}url"))
            .arg(self.url(slot))
            .arg(format!("{dash}name"))
            .arg(FLAG)
            .arg(format!("{dash}process"))
            .arg(format!("p{}", slot + 1))
            .arg(format!("{dash}interval"))
            .arg("2s")
            .arg(format!("{dash}timeout"))
            .arg("1s");
        if self.imp.name != "cli" {
            cmd.arg(format!("{dash}poll")).arg("10ms");
        }
        cmd.args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawn peer");
        let out = child.stdout.take().unwrap();
        let events = Arc::clone(&self.events);
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let ev = (|| {
                    Some(Event {
                        slot,
                        gen,
                        t: field(&line, "t_unix_ns")?.parse().ok()?,
                        raised: field(&line, "raised")? == "true",
                        deadline: field(&line, "deadline_unix_ns").and_then(|d| d.parse().ok()),
                    })
                })();
                if let Some(ev) = ev {
                    events.lock().unwrap().push(ev);
                }
            }
        });
        self.peers[slot] = Some(Peer { child, gen });
    }

    fn spawn_all(&mut self) {
        for s in 0..self.peers.len() {
            self.spawn(s);
        }
    }

    fn pid(&self, slot: usize) -> i32 {
        self.peers[slot].as_ref().unwrap().child.id() as i32
    }

    fn signal(&self, slot: usize, sig: i32) {
        if let Some(p) = &self.peers[slot] {
            // Our own child, not yet waited for: the pid cannot have been reused.
            unsafe { libc::kill(p.child.id() as i32, sig) };
        }
    }

    /// Waits for the slot's process to exit (after a signal); returns its exit code.
    fn reap(&mut self, slot: usize, timeout: Duration) -> Option<i32> {
        let mut p = self.peers[slot].take()?;
        let end = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = p.child.try_wait() {
                return st.code();
            }
            if Instant::now() > end {
                let _ = p.child.kill();
                let _ = p.child.wait();
                return None;
            }
            sleep_ms(5);
        }
    }

    /// The slot whose current process believes it leads now, by its latest line.
    fn leaders(&self) -> Vec<usize> {
        let ev = self.events.lock().unwrap();
        let now = unix_ns();
        let mut out = Vec::new();
        for (slot, p) in self.peers.iter().enumerate() {
            let Some(p) = p else { continue };
            let last = ev.iter().rev().find(|e| e.slot == slot && e.gen == p.gen);
            if let Some(e) = last {
                if e.raised && e.deadline.is_none_or(|d| d > now) {
                    out.push(slot);
                }
            }
        }
        out
    }

    fn started(&self, slot: usize) -> bool {
        let Some(p) = &self.peers[slot] else {
            return false;
        };
        let ev = self.events.lock().unwrap();
        ev.iter().any(|e| e.slot == slot && e.gen == p.gen)
    }

    /// Waits until exactly one leader and every peer started; returns the leader.
    fn settle(&self, timeout: Duration) -> Option<usize> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            let l = self.leaders();
            let all = (0..self.peers.len()).all(|s| self.started(s));
            if l.len() == 1 && all {
                return Some(l[0]);
            }
            sleep_ms(5);
        }
        None
    }

    /// The first raised line after `after` from another slot than `not`, waiting up to `timeout`.
    fn next_raise(&self, after: i64, not: usize, timeout: Duration) -> Option<i64> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            let found = self
                .events
                .lock()
                .unwrap()
                .iter()
                .filter(|e| e.raised && e.t > after && e.slot != not)
                .map(|e| e.t)
                .min();
            if found.is_some() {
                return found;
            }
            sleep_ms(5);
        }
        None
    }

    /// Time in `[from, to)` during which two or more processes believed they led, by their
    /// lines: a belief runs from a raised line to the next line of that process, and a line
    /// with a deadline ends it at that deadline at the latest.
    fn overlap(&self, from: i64, to: i64) -> i64 {
        let ev = self.events.lock().unwrap();
        let mut by: BTreeMap<(usize, usize), Vec<&Event>> = BTreeMap::new();
        for e in ev.iter() {
            by.entry((e.slot, e.gen)).or_default().push(e);
        }
        let mut edges: Vec<(i64, i32)> = Vec::new();
        for list in by.values() {
            for (i, e) in list.iter().enumerate() {
                if !e.raised {
                    continue;
                }
                let next = list.get(i + 1).map_or(to, |n| n.t);
                let end = e.deadline.map_or(next, |d| d.min(next)).min(to);
                let start = e.t.max(from);
                if end > start {
                    edges.push((start, 1));
                    edges.push((end, -1));
                }
            }
        }
        edges.sort();
        let (mut n, mut last, mut total) = (0, from, 0);
        for (t, d) in edges {
            if n >= 2 {
                total += t - last;
            }
            n += d;
            last = t;
        }
        total
    }

    /// When the slot's belief ended after `after` (its false line, or its deadline).
    fn lowered(&self, slot: usize, after: i64) -> Option<i64> {
        let ev = self.events.lock().unwrap();
        let gen = self.peers[slot].as_ref()?.gen;
        let mine: Vec<&Event> = ev
            .iter()
            .filter(|e| e.slot == slot && e.gen == gen)
            .collect();
        let last_raised = mine.iter().rev().find(|e| e.raised && e.t <= after);
        let false_line = mine.iter().find(|e| !e.raised && e.t > after).map(|e| e.t);
        let deadline = last_raised.and_then(|e| e.deadline);
        match (false_line, deadline) {
            (Some(f), Some(d)) => Some(f.min(d)),
            (f, d) => f.or(d),
        }
    }

    fn kill_all(&mut self) {
        for s in 0..self.peers.len() {
            self.signal(s, libc::SIGCONT);
            self.signal(s, libc::SIGKILL);
            self.reap(s, Duration::from_secs(2));
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.kill_all();
    }
}

// ---------------------------------------------------------------- statistics

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

fn summary(label: &str, imp: &str, samples_ms: &[f64], csv: &mut Csv) -> String {
    let mut s = samples_ms.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    for v in &s {
        csv.row(label, imp, *v);
    }
    format!(
        "| {label} | {imp} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
        s.len(),
        pct(&s, 0.0),
        pct(&s, 50.0),
        pct(&s, 90.0),
        pct(&s, 99.0),
        s.last().copied().unwrap_or(f64::NAN)
    )
}

const HEAD: &str =
    "| figure | impl | trials | min ms | median ms | p90 ms | p99 ms | max ms |\n|---|---|---|---|---|---|---|---|";

struct Csv(Option<std::fs::File>);

impl Csv {
    fn row(&mut self, label: &str, imp: &str, v: f64) {
        if let Some(f) = &mut self.0 {
            let _ = writeln!(f, "{label},{imp},{v:.3}");
        }
    }
}

/// A small deterministic generator for waiting times.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

// ---------------------------------------------------------------- scenarios

fn failover(imp: &Arc<Impl>, pg: &PgServer, trials: usize, csv: &mut Csv) -> String {
    let mut f = Fleet::new(imp, pg, 3);
    f.spawn_all();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut lat = Vec::new();
    let mut misses = 0;
    while lat.len() < trials && misses < 5 {
        let Some(leader) = f.settle(Duration::from_secs(15)) else {
            misses += 1;
            continue;
        };
        // Kill at a random age of the lease.
        sleep_ms(300 + rng.below(2000));
        let Some(leader) = f.settle(Duration::from_secs(5)).filter(|l| *l == leader) else {
            continue;
        };
        let t = unix_ns();
        f.signal(leader, libc::SIGKILL);
        match f.next_raise(t, leader, Duration::from_secs(15)) {
            Some(r) => lat.push((r - t) as f64 / MS),
            None => misses += 1,
        }
        f.reap(leader, Duration::from_secs(2));
        f.spawn(leader);
    }
    summary("kill -9 → another raised", &imp.name, &lat, csv)
}

fn handover(imp: &Arc<Impl>, pg: &PgServer, trials: usize, csv: &mut Csv) -> String {
    let mut f = Fleet::new(imp, pg, 3);
    f.spawn_all();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut lat = Vec::new();
    let mut misses = 0;
    while lat.len() < trials && misses < 5 {
        let Some(leader) = f.settle(Duration::from_secs(15)) else {
            misses += 1;
            continue;
        };
        sleep_ms(300 + rng.below(1500));
        let t = unix_ns();
        f.signal(leader, libc::SIGTERM);
        match f.next_raise(t, leader, Duration::from_secs(15)) {
            Some(r) => lat.push((r - t) as f64 / MS),
            None => misses += 1,
        }
        f.reap(leader, Duration::from_secs(5));
        f.spawn(leader);
    }
    summary("SIGTERM → another raised", &imp.name, &lat, csv)
}

/// SIGSTOP of the leader process (`backend == false`, 5 s) or of its PostgreSQL backends
/// (10 s): overlap of beliefs, and when a follower raised.
fn pause(imp: &Arc<Impl>, pg: &PgServer, trials: usize, backend: bool, csv: &mut Csv) -> String {
    let mut f = Fleet::new(imp, pg, 3);
    f.spawn_all();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let (mut overlaps, mut takeovers, mut lowers) = (Vec::new(), Vec::new(), Vec::new());
    let mut misses = 0;
    let stop_for = if backend { 10_000 } else { 5_000 };
    while overlaps.len() < trials && misses < 5 {
        let Some(leader) = f.settle(Duration::from_secs(15)) else {
            misses += 1;
            continue;
        };
        sleep_ms(300 + rng.below(1500));
        let t0 = unix_ns();
        let mut stopped = Vec::new();
        if backend {
            let pids = pg
                .psql(&format!(
                    "select pid from pg_stat_activity where usename = 'p{}'",
                    leader + 1
                ))
                .unwrap_or_default();
            for pid in pids.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                if pg.signal_backend(pid, Signal::Stop).is_ok() {
                    stopped.push(pid);
                }
            }
        } else {
            f.signal(leader, libc::SIGSTOP);
        }
        sleep_ms(stop_for);
        let t1 = unix_ns();
        for pid in &stopped {
            let _ = pg.signal_backend(*pid, Signal::Cont);
        }
        if !backend {
            f.signal(leader, libc::SIGCONT);
        }
        sleep_ms(3000);
        let t2 = unix_ns();
        overlaps.push(f.overlap(t0, t2) as f64 / MS);
        if let Some(r) = f.next_raise(t0, leader, Duration::from_millis(1)) {
            takeovers.push((r - t0) as f64 / MS);
        }
        if let Some(l) = f.lowered(leader, t0) {
            lowers.push((l - t0) as f64 / MS);
        }
        let _ = t1;
    }
    let what = if backend {
        "backend SIGSTOP 10 s"
    } else {
        "SIGSTOP 5 s"
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}",
        summary(&format!("{what}: overlap"), &imp.name, &overlaps, csv)
    );
    let _ = writeln!(
        out,
        "{}",
        summary(
            &format!("{what}: stop → follower raised"),
            &imp.name,
            &takeovers,
            csv
        )
    );
    out + &summary(
        &format!("{what}: stop → old leader's belief ends"),
        &imp.name,
        &lowers,
        csv,
    )
}

fn coldstart(imp: &Arc<Impl>, pg: &PgServer, trials: usize) -> String {
    let (mut failed, mut peers, mut bad_trials, mut leaders_wrong) = (0, 0, 0, 0);
    for _ in 0..trials {
        let mut f = Fleet::new(imp, pg, 8);
        let _ = pg.psql("drop table if exists leadership_flags");
        f.spawn_all();
        let end = Instant::now() + Duration::from_secs(10);
        let mut exited = [false; 8];
        // Until every peer printed its first line or exited.
        while Instant::now() < end {
            for (s, done) in exited.iter_mut().enumerate() {
                if !*done {
                    if let Some(p) = &mut f.peers[s] {
                        if let Ok(Some(st)) = p.child.try_wait() {
                            *done = true;
                            if !st.success() {
                                failed += 1;
                            }
                        }
                    }
                }
            }
            if (0..8).all(|s| exited[s] || f.started(s)) {
                break;
            }
            sleep_ms(5);
        }
        let trial_failed = exited.iter().any(|e| *e);
        sleep_ms(1500);
        let n = f.leaders().len();
        if n != 1 {
            leaders_wrong += 1;
        }
        if trial_failed {
            bad_trials += 1;
        }
        peers += 8;
        f.kill_all();
    }
    format!(
        "| cold start, 8 peers × {trials} | {} | start failed: {failed} of {peers} peers, in {bad_trials} trials; trials without exactly one leader after 1.5 s: {leaders_wrong} |",
        imp.name
    )
}

/// Statements per check by role, and client socket writes per check by strace.
fn statements(imp: &Arc<Impl>, pg: &PgServer) -> String {
    let mut f = Fleet::new(imp, pg, 3);
    f.spawn_all();
    let leader = f.settle(Duration::from_secs(15)).expect("a leader");
    let follower = (leader + 1) % 3;
    sleep_ms(3000);
    let window = Duration::from_secs(20);
    let strace = |slot: usize| {
        Command::new("strace")
            .args(["-f", "-yy", "-e", "trace=sendto,write,sendmsg,writev", "-p"])
            .arg(f.pid(slot).to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .ok()
    };
    let (st_l, st_f) = (strace(leader), strace(follower));
    sleep_ms(500);
    let _ = pg.psql("select pg_stat_statements_reset()");
    thread::sleep(window);
    let rows = pg
        .psql(
            "select r.rolname, s.calls, regexp_replace(left(s.query, 60), '\\s+', ' ', 'g') \
             from pg_stat_statements s join pg_roles r on r.oid = s.userid \
             where r.rolname like 'p_' order by 1, 2 desc",
        )
        .unwrap_or_default();
    let count_writes = |c: Option<Child>| -> Option<usize> {
        let c = c?;
        unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
        let out = c.wait_with_output().ok()?;
        let text = String::from_utf8_lossy(&out.stderr);
        // Writes to the TCP socket only (`-yy` names each fd): not stdout, eventfds, pipes.
        Some(
            text.lines()
                .filter(|l| l.contains("<TCP:") && !l.contains("resumed>"))
                .count(),
        )
    };
    let (w_l, w_f) = (count_writes(st_l), count_writes(st_f));
    let mut out = format!(
        "statements, {} (leader p{}, follower p{}), {:?} window:\n```\n{rows}```\n",
        imp.name,
        leader + 1,
        follower + 1,
        window
    );
    let per_role = |slot: usize| -> (u64, u64) {
        let mut total = 0;
        let mut max = 0;
        for l in rows.lines() {
            let mut parts = l.split('|');
            if parts.next() == Some(&format!("p{}", slot + 1)) {
                let calls: u64 = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
                total += calls;
                max = max.max(calls);
            }
        }
        // Every check runs the most frequent statement once.
        (total, max)
    };
    for (role, slot, writes) in [("leader", leader, w_l), ("follower", follower, w_f)] {
        let (total, checks) = per_role(slot);
        let _ = writeln!(
            out,
            "| {role} | {} | checks {checks} | statements/check {:.2} | socket writes/check {} |",
            imp.name,
            total as f64 / checks.max(1) as f64,
            writes.map_or("n/a".into(), |w| format!(
                "{:.2} ({w} writes)",
                w as f64 / checks.max(1) as f64
            ))
        );
    }
    out
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn memory(imp: &Arc<Impl>, pg: &PgServer) -> String {
    let mut out = String::new();
    for n in [1usize, 100] {
        if imp.name == "go" && n > 1 {
            let _ = writeln!(
                out,
                "| {n} flags | go | seedpeer holds one flag per process |"
            );
            continue;
        }
        let mut f = Fleet::new(imp, pg, 1);
        if n > 1 {
            f.extra = vec!["--flags".into(), n.to_string()];
        }
        f.spawn(0);
        let end = Instant::now() + Duration::from_secs(60);
        while !f.started(0) && Instant::now() < end {
            sleep_ms(20);
        }
        sleep_ms(5000);
        let kib = rss_kib(f.pid(0));
        let _ = writeln!(
            out,
            "| {n} flag(s) | {} | RSS {:.1} MiB |",
            imp.name,
            kib as f64 / 1024.0
        );
        f.kill_all();
    }
    out
}

/// CPU ticks (user + system) of the postmaster and all its children.
fn server_ticks(pg: &PgServer) -> u64 {
    let Some(pm) = pg.server_pid() else { return 0 };
    let mut total = 0;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ppid: u32 = f.get(1).and_then(|p| p.parse().ok()).unwrap_or(0);
        if pid == pm || ppid == pm {
            let u: u64 = f.get(11).and_then(|p| p.parse().ok()).unwrap_or(0);
            let s: u64 = f.get(12).and_then(|p| p.parse().ok()).unwrap_or(0);
            total += u + s;
        }
    }
    total
}

fn total_calls(pg: &PgServer) -> u64 {
    pg.psql("select coalesce(sum(calls), 0) from pg_stat_statements s join pg_roles r on r.oid = s.userid where r.rolname like 'f%'")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// N flags at interval 2 s: Rust as one process holding N flags (N connections), Go as N
/// processes. Server statements/s and CPU over 20 s.
/// `set`: our flags in one `FlagSet` over one connection (`tokio_peer --set`).
fn fleet(imp: &Arc<Impl>, pg: &PgServer, sizes: &[usize], set: bool) -> String {
    let mut out = String::new();
    let _ = pg.psql("create role f1 superuser login");
    for &n in sizes {
        let url = format!(
            "postgres://f1@127.0.0.1:{}/postgres?sslmode=disable",
            pg.port()
        );
        let mut children: Vec<Child> = Vec::new();
        let dash = if imp.name == "go" { "-" } else { "--" };
        let spawn = |name: String, flags: usize| {
            let mut c = Command::new(&imp.bin);
            c.arg(format!("{dash}url"))
                .arg(&url)
                .arg(format!("{dash}name"))
                .arg(name)
                .arg(format!("{dash}process"))
                .arg("f1");
            if flags > 1 {
                c.arg("--flags").arg(flags.to_string());
            }
            if set {
                c.arg("--set");
            }
            c.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn")
        };
        if imp.name == "go" {
            for i in 0..n {
                children.push(spawn(format!("fleet{i}"), 1));
            }
        } else {
            children.push(spawn("fleet".into(), n));
        }
        sleep_ms(8000);
        let _ = pg.psql("select pg_stat_statements_reset()");
        let (c0, t0, w0) = (total_calls(pg), server_ticks(pg), Instant::now());
        sleep_ms(20_000);
        let (c1, t1, dt) = (total_calls(pg), server_ticks(pg), w0.elapsed());
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let secs = dt.as_secs_f64();
        let stmts = (c1.saturating_sub(c0)) as f64 / secs;
        let cpu = (t1.saturating_sub(t0)) as f64 / hz / secs * 100.0;
        let _ = writeln!(
            out,
            "| {n} flags, interval 2 s | {}{} | {:.0} statements/s | server CPU {:.1}% of one core | {:.1} µs CPU per statement |",
            imp.name,
            if set { " (one FlagSet)" } else { "" },
            stmts,
            cpu,
            cpu / 100.0 / stmts.max(1e-9) * 1e6
        );
        for mut c in children {
            unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
            let _ = c.wait();
        }
        sleep_ms(1000);
        let _ = pg.psql("delete from leadership_flags");
    }
    out
}

/// The server's ceiling of checks/s: pgbench, 64 clients, on `n` flags, with our one prepared
/// statement and with the Go flag's three (lib/pq style: extended protocol, unnamed statements).
/// Leader = the write path (our check with lease 0 takes the row over on every call, a write like
/// a renew; Go's update), follower = the read path.
fn ceiling(pg: &PgServer, sizes: &[usize], secs: u64) -> String {
    let check = leadership_core::sql::Statements::new(
        &leadership_core::sql::Table::new("leadership_flags").unwrap(),
    )
    .check
    .clone();
    let dir = std::env::temp_dir().join(format!("leadership-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let ours = |lease: &str| {
        let stmt = check
            .replace("$1", "(:n)::text")
            .replace("$2", "'p1'")
            .replace("$3", "NULL")
            .replace("$4", lease)
            .replace("$5", "0")
            .replace("$6", "true")
            .replace("$7", "true")
            .replace("$8", "NULL");
        // pgbench wants one statement per line.
        format!(
            "\\set n random(1, :nflags)\n{}\n",
            stmt.split_whitespace().collect::<Vec<_>>().join(" ")
        )
    };
    let go_read = "\\set n random(1, :nflags)\nselect now();\nselect holder, version, timestamp from leadership_flags where name = (:n)::text;\n";
    let go_write = format!(
        "{go_read}update leadership_flags set version = version + 1, timestamp = now() where name = (:n)::text and holder = 'p1' and version >= 0;\n"
    );
    let scripts = [
        ("leadership, leader (write path)", ours("0"), "prepared"),
        (
            "leadership, follower (read path)",
            ours("3600000000"),
            "prepared",
        ),
        ("Go flag, leader (3 statements)", go_write, "extended"),
        (
            "Go flag, follower (2 statements)",
            go_read.to_string(),
            "extended",
        ),
    ];
    let pgbench = PathBuf::from("/usr/lib/postgresql/15/bin/pgbench");
    let mut out = String::from(
        "| flags | script | protocol | checks/s (64 clients) | statements/s |\n|---|---|---|---|---|\n",
    );
    for &n in sizes {
        let _ = pg.psql("delete from leadership_flags");
        let _ = pg.psql(&format!(
            "insert into leadership_flags select i::text, 'p1', 0, now() from generate_series(1, {n}) i"
        ));
        for (label, text, mode) in &scripts {
            let file = dir.join("script.sql");
            std::fs::write(&file, text).unwrap();
            let o = Command::new(&pgbench)
                .args(["-n", "-c", "64", "-j", "2", "-M", mode, "-T"])
                .arg(secs.to_string())
                .arg("-D")
                .arg(format!("nflags={n}"))
                .arg("-f")
                .arg(&file)
                .args(["-h", "127.0.0.1", "-p"])
                .arg(pg.port().to_string())
                .args(["-U", "postgres", "postgres"])
                .output()
                .expect("pgbench");
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let tps: f64 = text
                .lines()
                .find(|l| l.starts_with("tps"))
                .and_then(|l| l.split_whitespace().nth(2)?.parse().ok())
                .unwrap_or(f64::NAN);
            if tps.is_nan() {
                eprintln!(
                    "pgbench failed: {text}\n{}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            let per = if label.contains("leader (3") {
                3.0
            } else if label.starts_with("Go") {
                2.0
            } else {
                1.0
            };
            let _ = writeln!(
                out,
                "| {n} | {label} | {mode} | {tps:.0} | {:.0} |",
                tps * per
            );
        }
    }
    out
}

// ---------------------------------------------------------------- plot

fn plot(csv: &Path, svg: &Path, labels: &[String]) {
    let text = std::fs::read_to_string(csv).expect("read csv");
    let mut series: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for l in text.lines() {
        let mut p = l.rsplitn(3, ',');
        let (Some(v), Some(imp), Some(label)) = (p.next(), p.next(), p.next()) else {
            continue;
        };
        if !labels.is_empty() && !labels.iter().any(|x| label.contains(x.as_str())) {
            continue;
        }
        if let Ok(v) = v.parse::<f64>() {
            series
                .entry((label.to_string(), imp.to_string()))
                .or_default()
                .push(v);
        }
    }
    let groups: Vec<String> = {
        let mut g: Vec<String> = series.keys().map(|k| k.0.clone()).collect();
        g.dedup();
        g
    };
    let (w, ph) = (720.0, 180.0);
    let h = 40.0 + groups.len() as f64 * (ph + 50.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"10\" y=\"20\" font-size=\"14\">Cumulative distribution of latencies (ms), Go flag vs leadership; one dot per trial</text>\n"
    );
    let colors = [
        ("go", "#d62728"),
        ("tokio", "#1f77b4"),
        ("blocking", "#2ca02c"),
    ];
    for (gi, g) in groups.iter().enumerate() {
        let y0 = 40.0 + gi as f64 * (ph + 50.0);
        let all: Vec<f64> = series
            .iter()
            .filter(|(k, _)| &k.0 == g)
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        let max = all.iter().copied().fold(1.0, f64::max);
        // Log scale when the range is wide.
        let min = all.iter().copied().fold(f64::INFINITY, f64::min).max(0.5);
        let log = max / min > 50.0;
        let xf = |v: f64| {
            let (x0, x1) = (60.0, w - 20.0);
            if log {
                x0 + (v.max(min).ln() - min.ln()) / (max.ln() - min.ln()).max(1e-9) * (x1 - x0)
            } else {
                x0 + v / max * (x1 - x0)
            }
        };
        let _ = writeln!(
            s,
            "<text x=\"10\" y=\"{}\" font-size=\"12\" font-weight=\"bold\">{}</text>",
            y0 + 12.0,
            esc(g)
        );
        let (top, bot) = (y0 + 20.0, y0 + 20.0 + ph - 30.0);
        let _ = writeln!(s, "<line x1=\"60\" y1=\"{bot}\" x2=\"{}\" y2=\"{bot}\" stroke=\"#888\"/><line x1=\"60\" y1=\"{top}\" x2=\"60\" y2=\"{bot}\" stroke=\"#888\"/>", w - 20.0);
        for q in [0.0, 0.5, 1.0] {
            let y = bot - q * (bot - top);
            let _ = writeln!(s, "<text x=\"30\" y=\"{:.1}\">{q}</text>", y + 4.0);
        }
        let ticks: Vec<f64> = if log {
            [1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0]
                .into_iter()
                .filter(|t| *t >= min * 0.99 && *t <= max * 1.01)
                .collect()
        } else {
            (0..=5).map(|i| max * i as f64 / 5.0).collect()
        };
        for t in ticks {
            let x = xf(t);
            let _ = writeln!(
                s,
                "<line x1=\"{x:.1}\" y1=\"{bot}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#888\"/><text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{t:.0}</text>",
                bot + 4.0,
                bot + 16.0
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">ms{}</text>",
            w - 20.0,
            bot + 28.0,
            if log { " (log scale)" } else { "" }
        );
        let mut li = 0.0;
        for ((label, imp), v) in &series {
            if label != g {
                continue;
            }
            let color = colors.iter().find(|c| c.0 == imp).map_or("#555", |c| c.1);
            let mut v = v.clone();
            v.sort_by(|a, b| a.total_cmp(b));
            let n = v.len() as f64;
            let mut path = String::new();
            for (i, x) in v.iter().enumerate() {
                let (px, py) = (xf(*x), bot - (i + 1) as f64 / n * (bot - top));
                let _ = write!(path, "{}{px:.1},{py:.1} ", if i == 0 { "M" } else { "L" });
                let _ = writeln!(
                    s,
                    "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"2\" fill=\"{color}\"/>"
                );
            }
            let _ = writeln!(
                s,
                "<path d=\"{path}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\"/>"
            );
            let mid = pct(&v, 50.0);
            let _ = writeln!(
                s,
                "<text x=\"70\" y=\"{:.1}\" fill=\"{color}\">{imp}: n={} median {mid:.0} ms, max {:.0} ms</text>",
                top + 10.0 + li,
                v.len(),
                v.last().copied().unwrap_or(0.0)
            );
            li += 14.0;
        }
    }
    s.push_str("</svg>\n");
    std::fs::write(svg, s).expect("write svg");
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

// ---------------------------------------------------------------- main

fn build_impl(name: &str) -> Impl {
    if name == "go" {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/peers/go-seed/build.sh");
        let out = std::env::temp_dir().join("leadership-go-seed");
        let o = Command::new("bash")
            .arg(&script)
            .arg(&out)
            .stdin(Stdio::null())
            .output()
            .expect("run build.sh");
        assert!(o.status.success(), "build.sh failed: {o:?}");
        let path = String::from_utf8_lossy(&o.stdout)
            .lines()
            .last()
            .unwrap_or("")
            .trim()
            .to_string();
        return Impl {
            name: name.into(),
            bin: PathBuf::from(path),
        };
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")));
    if name == "cli" {
        let st = Command::new(&cargo)
            .args([
                "build",
                "--release",
                "-p",
                "leadership-cli",
                "--bin",
                "leadership",
            ])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .expect("cargo build");
        assert!(st.success(), "building the leadership command failed");
        return Impl {
            name: name.into(),
            bin: target.join("release/leadership"),
        };
    }
    let pkg = format!("leadership-{name}");
    let example = format!("{name}_peer");
    let st = Command::new(cargo)
        .args(["build", "--release", "-p", &pkg, "--example", &example])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .status()
        .expect("cargo build");
    assert!(st.success(), "building {pkg}'s {example} example failed");
    Impl {
        name: name.into(),
        bin: target.join("release/examples").join(example),
    }
}

/// The implementations a scenario runs, and where its samples go.
#[derive(clap::Args, Clone, Debug)]
struct Peers {
    /// The implementations to run side by side: go (the reference flag, `seedpeer`), tokio,
    /// blocking, cli (`leadership watch`).
    #[arg(long = "impl", value_delimiter = ',', default_value = "go,tokio")]
    impls: Vec<String>,
    /// Append each sample to this CSV file (for `bench plot`).
    #[arg(long)]
    csv: Option<PathBuf>,
}

/// Benchmarks against real PostgreSQL, side by side with the Go flag.
#[derive(clap::Parser, Debug)]
#[command(name = "bench")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(clap::Subcommand, Debug)]
enum Scenario {
    /// Statements and round trips per check (pg_stat_statements, one role per peer; socket
    /// writes with strace).
    Statements(Peers),
    /// Crash failover: kill -9 the leader, time until another leads.
    Failover {
        #[command(flatten)]
        peers: Peers,
        /// Trials.
        #[arg(long, default_value_t = 30)]
        trials: usize,
    },
    /// Graceful handover: SIGTERM the leader, time until another leads.
    Handover {
        #[command(flatten)]
        peers: Peers,
        /// Trials.
        #[arg(long, default_value_t = 30)]
        trials: usize,
    },
    /// SIGSTOP the leader for 5 s: how long two believe they lead.
    Pause {
        #[command(flatten)]
        peers: Peers,
        /// Trials.
        #[arg(long, default_value_t = 9)]
        trials: usize,
    },
    /// SIGSTOP the leader's backends for 10 s (a hung database).
    Hung {
        #[command(flatten)]
        peers: Peers,
        /// Trials.
        #[arg(long, default_value_t = 9)]
        trials: usize,
    },
    /// 8 peers at once on an empty database: failed starts.
    Coldstart {
        #[command(flatten)]
        peers: Peers,
        /// Trials.
        #[arg(long, default_value_t = 30)]
        trials: usize,
    },
    /// Resident memory with 1 and 100 flags.
    Memory(Peers),
    /// Server statements/s and CPU for N flags.
    Fleet {
        #[command(flatten)]
        peers: Peers,
        /// Numbers of flags.
        #[arg(long, value_delimiter = ',', default_value = "10,100")]
        sizes: Vec<usize>,
        /// The Rust peers hold their flags in one `FlagSet`.
        #[arg(long)]
        set: bool,
    },
    /// The server's ceiling in checks/s (pgbench; no peers).
    Ceiling {
        /// Numbers of flags in the table.
        #[arg(long, value_delimiter = ',', default_value = "10,100")]
        sizes: Vec<usize>,
        /// Seconds per pgbench run.
        #[arg(long, default_value_t = 30)]
        secs: u64,
    },
    /// What a check costs the server with fsync on: transaction IDs, WAL, fsyncs, CPU, lock
    /// waits, the ceiling, the fleet per day (`cost.rs`).
    Cost(cost::Options),
    /// The first six scenarios.
    All {
        #[command(flatten)]
        peers: Peers,
        /// Trials of each (default: each scenario's own).
        #[arg(long)]
        trials: Option<usize>,
    },
    /// Draws the samples of a CSV file as an SVG.
    Plot {
        /// The samples.
        #[arg(long)]
        csv: PathBuf,
        /// The picture to write.
        #[arg(long)]
        svg: PathBuf,
        /// Only these labels, separated by `;`.
        #[arg(long, value_delimiter = ';')]
        only: Vec<String>,
    },
}

fn main() {
    use clap::Parser as _;
    let scenario = Cli::parse().scenario;
    let (peers, list, trials): (Peers, Vec<&str>, Option<usize>) = match &scenario {
        Scenario::Plot { csv, svg, only } => return plot(csv, svg, only),
        // pgbench only, no peers to build.
        Scenario::Cost(options) => return cost::run(options),
        Scenario::Statements(p) => (p.clone(), vec!["statements"], None),
        Scenario::Failover { peers, trials } => (peers.clone(), vec!["failover"], Some(*trials)),
        Scenario::Handover { peers, trials } => (peers.clone(), vec!["handover"], Some(*trials)),
        Scenario::Pause { peers, trials } => (peers.clone(), vec!["pause"], Some(*trials)),
        Scenario::Hung { peers, trials } => (peers.clone(), vec!["hung"], Some(*trials)),
        Scenario::Coldstart { peers, trials } => (peers.clone(), vec!["coldstart"], Some(*trials)),
        Scenario::Memory(p) => (p.clone(), vec!["memory"], None),
        Scenario::Fleet { peers, .. } => (peers.clone(), vec!["fleet"], None),
        // The ceiling runs pgbench, no peers: once, with the first implementation's name.
        Scenario::Ceiling { .. } => (
            Peers {
                impls: vec!["go".into()],
                csv: None,
            },
            vec!["ceiling"],
            None,
        ),
        Scenario::All { peers, trials } => (
            peers.clone(),
            vec![
                "statements",
                "failover",
                "handover",
                "pause",
                "hung",
                "coldstart",
            ],
            *trials,
        ),
    };
    let impls: Vec<Arc<Impl>> = peers
        .impls
        .iter()
        .map(|n| Arc::new(build_impl(n)))
        .collect();
    let mut csv = Csv(peers.csv.as_ref().map(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .expect("open csv")
    }));
    let started = Instant::now();
    for sc in list {
        for imp in &impls {
            // A fresh server per scenario and implementation: nothing carries over.
            let pg = PgServer::start().expect("start PostgreSQL");
            let w = Instant::now();
            let out = match (sc, &scenario) {
                ("statements", _) => statements(imp, &pg),
                ("failover", _) => format!(
                    "{HEAD}\n{}",
                    failover(imp, &pg, trials.unwrap_or(30), &mut csv)
                ),
                ("handover", _) => format!(
                    "{HEAD}\n{}",
                    handover(imp, &pg, trials.unwrap_or(30), &mut csv)
                ),
                ("pause", _) => format!(
                    "{HEAD}\n{}",
                    pause(imp, &pg, trials.unwrap_or(9), false, &mut csv)
                ),
                ("hung", _) => format!(
                    "{HEAD}\n{}",
                    pause(imp, &pg, trials.unwrap_or(9), true, &mut csv)
                ),
                ("coldstart", _) => coldstart(imp, &pg, trials.unwrap_or(30)),
                ("memory", _) => memory(imp, &pg),
                ("fleet", Scenario::Fleet { sizes, set, .. }) => {
                    fleet(imp, &pg, sizes, *set && imp.name != "go")
                }
                ("ceiling", Scenario::Ceiling { sizes, secs }) => {
                    let _ = pg.psql(&table());
                    ceiling(&pg, sizes, *secs)
                }
                _ => unreachable!(),
            };
            println!(
                "## {sc} — {} ({:.0} s)\n{out}\n",
                imp.name,
                w.elapsed().as_secs_f64()
            );
            let _ = std::io::stdout().flush();
        }
    }
    eprintln!("total {:.0} s", started.elapsed().as_secs_f64());
}

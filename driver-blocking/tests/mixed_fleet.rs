//! A mixed fleet on one flag: the unmodified Go flag (`seedpeer`, built from
//! `shared/peers/go-seed`) and the blocking Rust driver, each in its own OS process, for about
//! 20 s with the leader paused (SIGSTOP) twice. Checked: two Rust processes never believe they
//! lead at once, and a Rust process takes the row from a Go holder only once the Go holder's
//! lease has expired by the Go rule (`now - timestamp > interval`, the server's clock).
//!
//! The Rust processes are this test binary run again in child mode (an environment variable
//! says which), so the one test is all there is: nothing is skipped or ignored.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use leadership_core::sql::{Statements, Table};
use leadership_pgkit::helpers::{seedpeer, server};
use leadership_tokio::internal::PgTime;

const INTERVAL: Duration = Duration::from_secs(2);
const FLAG: &str = "fleet";
const CHILD_ENV: &str = "LEADERSHIP_MIXED_FLEET_CHILD";
const TEST_NAME: &str = "go_and_rust_processes_share_a_flag_safely";

fn unix_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// Child mode: one Rust process on the flag, printing a JSON line on every change of its
/// belief, with the deadline of that belief (`until_unix_ns`), until its stdin closes.
fn child(spec: &str) -> ! {
    let (process, conn) = spec.split_once(' ').expect("child spec: PROCESS CONNSTR");
    let flag = leadership_blocking::Flag::builder(FLAG, process)
        .interval(INTERVAL)
        .timeout(Duration::from_secs(1))
        .connect_str(conn)
        .start(postgres::NoTls)
        .unwrap_or_else(|e| panic!("child {process}: {e}"));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = Arc::clone(&done);
    thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        watcher.store(true, Ordering::SeqCst);
    });
    let mut out = std::io::stdout().lock();
    let mut printed = Vec::new();
    let mut print = |terms: Vec<leadership_blocking::TermRecord>| {
        // Each term as its driver recorded it, again whenever it changes (a renew moves its
        // deadline, a lowering withdraws it): the instants are the lease clock's (one clock for
        // every process of the machine), with the wall clock's offset for the Go peers' lines.
        let offset = unix_ns() - leadership_blocking::lease_clock_ns() as i64;
        for t in &terms {
            if !printed.contains(t) {
                let line = format!(
                    "{{\"process\":\"{process}\",\"token\":{},\"began_ns\":{},\"ended_ns\":{},\"offset_ns\":{offset}}}\n",
                    t.token,
                    t.began_ns,
                    t.ended_ns()
                );
                out.write_all(line.as_bytes()).unwrap();
            }
        }
        out.flush().unwrap();
        printed = terms;
    };
    while !done.load(Ordering::SeqCst) {
        print(flag.terms());
        thread::sleep(Duration::from_millis(5));
    }
    let log = flag.term_log();
    let _ = flag.close();
    print(log.terms());
    std::process::exit(0);
}

/// One observed line.
#[derive(Clone, Debug)]
struct Event {
    t: i64,
    process: String,
    raised: bool,
    until: Option<i64>,
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &line[at..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"'))
}

/// A Rust child's term: `(process, token) -> (began, ended)` on the lease clock, and the wall
/// clock's offset from it.
#[derive(Clone, Debug)]
struct RustTerm {
    process: String,
    token: i64,
    began: i64,
    ended: i64,
    offset: i64,
}

fn parse_term(line: &str) -> Option<RustTerm> {
    Some(RustTerm {
        process: field(line, "process")?.to_string(),
        token: field(line, "token")?.parse().ok()?,
        began: field(line, "began_ns")?.parse().ok()?,
        ended: field(line, "ended_ns")?.parse().ok()?,
        offset: field(line, "offset_ns")?.parse().ok()?,
    })
}

fn parse(line: &str) -> Option<Event> {
    Some(Event {
        t: field(line, "t_unix_ns")?.parse().ok()?,
        process: field(line, "process")?.to_string(),
        raised: field(line, "raised")? == "true",
        until: field(line, "until_unix_ns").and_then(|u| u.parse().ok()),
    })
}

/// Children are killed when the test ends, however it ends.
struct Fleet(Vec<(String, Child)>);

impl Drop for Fleet {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            signal_quietly(c, libc::SIGCONT); // in case it is stopped
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn signal_quietly(child: &Child, sig: i32) -> bool {
    // The pid is our own child's, not yet waited for, so it cannot have been reused.
    unsafe { libc::kill(child.id() as i32, sig) == 0 }
}

fn signal(child: &Child, sig: i32) {
    assert!(signal_quietly(child, sig), "kill({}, {sig})", child.id());
}

/// A poll of the flag's row.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    holder: String,
    version: i64,
    timestamp: i64,
    now: i64,
}

fn poll_rows(conn: String, stop: Arc<AtomicBool>) -> thread::JoinHandle<Vec<Seen>> {
    thread::spawn(move || {
        let mut client =
            postgres::Client::connect(&conn, postgres::NoTls).expect("poller connects");
        let query = client
            .prepare("select holder, version, \"timestamp\", now() from leadership_flags where name = $1")
            .unwrap();
        let mut seen: Vec<Seen> = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            if let Ok(Some(r)) = client.query_opt(&query, &[&FLAG]) {
                let s = Seen {
                    holder: r.get(0),
                    version: r.get(1),
                    timestamp: r.get::<_, PgTime>(2).0.as_unix_micros(),
                    now: r.get::<_, PgTime>(3).0.as_unix_micros(),
                };
                if seen.last().map(|l| l.version) != Some(s.version) {
                    seen.push(s);
                }
            }
            thread::sleep(Duration::from_millis(3));
        }
        seen
    })
}

/// The Go peers' belief intervals `[from, to)` in unix ns per process, from their lines.
fn intervals(events: &[Event], end: i64) -> BTreeMap<String, Vec<(i64, i64)>> {
    let mut by: BTreeMap<String, Vec<&Event>> = BTreeMap::new();
    for e in events {
        by.entry(e.process.clone()).or_default().push(e);
    }
    let mut out = BTreeMap::new();
    for (p, evs) in by {
        let mut spans = Vec::new();
        for (i, e) in evs.iter().enumerate() {
            if e.raised {
                let next = evs.get(i + 1).map_or(end, |n| n.t);
                let to = e.until.map_or(next, |u| u.min(next));
                spans.push((e.t, to));
            }
        }
        out.insert(p, spans);
    }
    out
}

fn overlaps(a: &[(i64, i64)], b: &[(i64, i64)]) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    for &(a0, a1) in a {
        for &(b0, b1) in b {
            let (from, to) = (a0.max(b0), a1.min(b1));
            if from < to {
                out.push((from, to));
            }
        }
    }
    out
}

#[test]
fn go_and_rust_processes_share_a_flag_safely() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child(&spec);
    }
    let started = Instant::now();
    let seedpeer = seedpeer();
    println!(
        "seedpeer built in {:?}: {}",
        started.elapsed(),
        seedpeer.display()
    );
    let server = server();
    // The table first: the Go flag's own `create table if not exists` races with itself.
    let st = Statements::new(&Table::default());
    server.psql(&st.create_table).unwrap();

    let events: Arc<Mutex<Vec<Event>>> = Arc::default();
    let rust_terms: Arc<Mutex<Vec<RustTerm>>> = Arc::default();
    let mut fleet = Fleet(Vec::new());
    let interval = format!("{}s", INTERVAL.as_secs());
    for g in ["go1", "go2"] {
        let child = Command::new(&seedpeer)
            .args([
                "-url",
                &server.url(),
                "-name",
                FLAG,
                "-process",
                g,
                "-interval",
                &interval,
            ])
            .args(["-poll", "5ms", "-build-attempts", "3"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn seedpeer");
        fleet.0.push((g.to_string(), child));
    }
    // The Go peers lead first, so that the Rust ones have a Go lease to respect.
    let go_holds = Instant::now();
    while !server
        .psql(&format!(
            "select holder from leadership_flags where name = '{FLAG}'"
        ))
        .unwrap()
        .starts_with("go")
    {
        assert!(
            go_holds.elapsed() < Duration::from_secs(10),
            "no Go peer took the flag"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let exe = std::env::current_exe().unwrap();
    for r in ["rust1", "rust2"] {
        let child = Command::new(&exe)
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, format!("{r} {}", server.conn_string()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn a Rust child");
        fleet.0.push((r.to_string(), child));
    }
    let readers: Vec<_> = fleet
        .0
        .iter_mut()
        .map(|(_, c)| {
            let out = c.stdout.take().unwrap();
            let events = Arc::clone(&events);
            let rust_terms = Arc::clone(&rust_terms);
            thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if let Some(t) = parse_term(line.trim()) {
                        rust_terms.lock().unwrap().push(t);
                    } else if let Some(e) = parse(line.trim()) {
                        events.lock().unwrap().push(e);
                    }
                }
            })
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let poller = poll_rows(server.conn_string(), Arc::clone(&stop));
    let t0 = Instant::now();

    // Twice: pause whoever holds the row for 4 s, then let it go on.
    let mut paused = Vec::new();
    for at in [5, 12] {
        thread::sleep(Duration::from_secs(at).saturating_sub(t0.elapsed()));
        let holder = server
            .psql(&format!(
                "select holder from leadership_flags where name = '{FLAG}'"
            ))
            .unwrap()
            .trim()
            .to_string();
        let (_, child) = fleet
            .0
            .iter()
            .find(|(p, _)| *p == holder)
            .expect("the holder is ours");
        let at_ns = unix_ns();
        signal(child, libc::SIGSTOP);
        thread::sleep(Duration::from_secs(4));
        signal(child, libc::SIGCONT);
        paused.push((holder, at_ns));
    }
    thread::sleep(Duration::from_secs(20).saturating_sub(t0.elapsed()));
    let end = unix_ns();
    for (p, c) in &mut fleet.0 {
        if p.starts_with("go") {
            signal(c, libc::SIGTERM);
        } else {
            drop(c.stdin.take()); // the child closes its flag and exits
        }
    }
    for (_, c) in &mut fleet.0 {
        let _ = c.wait();
    }
    stop.store(true, Ordering::SeqCst);
    let rows = poller.join().unwrap();
    for r in readers {
        r.join().unwrap();
    }
    let events = events.lock().unwrap().clone();
    // The last line of each Rust term is its final state.
    let mut terms: BTreeMap<(String, i64), RustTerm> = BTreeMap::new();
    for t in rust_terms.lock().unwrap().iter() {
        terms.insert((t.process.clone(), t.token), t.clone());
    }
    let mut spans = intervals(&events, end);
    for t in terms.values() {
        spans
            .entry(t.process.clone())
            .or_default()
            .push((t.began + t.offset, t.ended + t.offset));
    }
    println!("paused: {paused:?}");
    for (p, s) in &spans {
        let rel: Vec<(f64, f64)> = s
            .iter()
            .map(|(a, b)| {
                (
                    ((a - first_event(&events)) as f64) / 1e9,
                    ((b - first_event(&events)) as f64) / 1e9,
                )
            })
            .collect();
        println!("{p} raised (s since the first line): {rel:.3?}");
    }

    // 1. Never two Rust processes leading at once, judged from the instants they recorded on
    //    one clock (the Go peers' lines are samples of the Go flag's belief: printed only).
    let rust = |p: &str| p.starts_with("rust");
    let recorded = |p: &str| -> Vec<(i64, i64)> {
        terms
            .values()
            .filter(|t| t.process == p)
            .map(|t| (t.began, t.ended))
            .collect()
    };
    // The judge has something to judge: the pauses hand the flag to the Rust processes.
    assert!(!terms.is_empty(), "no Rust process recorded a term");
    let names: Vec<&String> = spans.keys().collect();
    for (i, a) in names.iter().enumerate() {
        for b in &names[i + 1..] {
            if rust(a) && rust(b) {
                let o = overlaps(&recorded(a), &recorded(b));
                assert!(o.is_empty(), "{a} and {b} both raised: {o:?}");
                continue;
            }
            let o = overlaps(&spans[*a], &spans[*b]);
            let total: i64 = o.iter().map(|(f, t)| t - f).sum();
            if !o.is_empty() {
                println!("overlap {a} & {b}: {:.3} s in {} spans (the Go flag's known belief after a pause)", total as f64 / 1e9, o.len());
            }
        }
    }

    // 2. Takeovers against the Go rule, from the row's history.
    let lease_us = INTERVAL.as_micros() as i64;
    let (mut checked, mut unverifiable) = (0, 0);
    for w in rows.windows(2) {
        let (prev, next) = (&w[0], &w[1]);
        if prev.holder == next.holder {
            continue;
        }
        let age = next.timestamp - prev.timestamp;
        println!(
            "{} -> {} at version {}: previous lease age {:.3} s (Go rule: > {:.3} s)",
            prev.holder,
            next.holder,
            next.version,
            age as f64 / 1e6,
            lease_us as f64 / 1e6
        );
        if !rust(&next.holder) {
            continue;
        }
        if next.version != prev.version + 1 {
            unverifiable += 1; // a write in between was missed by the poll
            continue;
        }
        checked += 1;
        assert!(
            age > lease_us,
            "{} took over from {} after {age} µs, inside the lease",
            next.holder,
            prev.holder
        );
    }
    let holders: std::collections::BTreeSet<&str> =
        rows.iter().map(|r| r.holder.as_str()).collect();
    println!("{} row versions seen; holders {holders:?}; {checked} Rust takeovers checked, {unverifiable} unverifiable", rows.len());
    assert!(rows.len() > 5, "the flag was renewed");
    assert!(holders.len() >= 2, "the pauses moved the flag");
    let total = started.elapsed();
    println!("mixed fleet ran in {total:?}");
}

fn first_event(events: &[Event]) -> i64 {
    events.iter().map(|e| e.t).min().unwrap_or(0)
}

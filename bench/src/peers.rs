//! The peers a scenario runs: one implementation's processes on one server, their JSON lines,
//! and how each implementation is built.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use leadership_pgkit::pg::PgServer;

pub(crate) const FLAG: &str = "seed";
pub(crate) const MS: f64 = 1e6;
/// The flags table as our processes create it (the Go flag's columns and the term column).
pub(crate) fn table() -> String {
    leadership_core::sql::Statements::new(&leadership_core::sql::Table::default()).create_table
}

pub(crate) fn unix_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

pub(crate) fn sleep_ms(ms: u64) {
    thread::sleep(Duration::from_millis(ms));
}

#[derive(Clone, Debug)]
pub(crate) struct Event {
    /// Which spawn of which slot printed it.
    pub(crate) slot: usize,
    pub(crate) gen: usize,
    pub(crate) t: i64,
    pub(crate) raised: bool,
    pub(crate) deadline: Option<i64>,
}

pub(crate) fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &line[at..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"'))
}

pub(crate) struct Impl {
    pub(crate) name: String,
    pub(crate) bin: PathBuf,
}

pub(crate) struct Peer {
    pub(crate) child: Child,
    pub(crate) gen: usize,
}

/// Peers `p1..pN`, each logging in as its own superuser role of the same name.
pub(crate) struct Fleet {
    pub(crate) imp: Arc<Impl>,
    pub(crate) port: u16,
    pub(crate) peers: Vec<Option<Peer>>,
    pub(crate) events: Arc<Mutex<Vec<Event>>>,
    pub(crate) next_gen: usize,
    pub(crate) extra: Vec<String>,
}

impl Fleet {
    pub(crate) fn new(imp: &Arc<Impl>, pg: &PgServer, n: usize) -> Fleet {
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

    pub(crate) fn url(&self, slot: usize) -> String {
        format!(
            "postgres://p{}@127.0.0.1:{}/postgres?sslmode=disable",
            slot + 1,
            self.port
        )
    }

    pub(crate) fn spawn(&mut self, slot: usize) {
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

    pub(crate) fn spawn_all(&mut self) {
        for s in 0..self.peers.len() {
            self.spawn(s);
        }
    }

    pub(crate) fn pid(&self, slot: usize) -> i32 {
        self.peers[slot].as_ref().unwrap().child.id() as i32
    }

    pub(crate) fn signal(&self, slot: usize, sig: i32) {
        if let Some(p) = &self.peers[slot] {
            // Our own child, not yet waited for: the pid cannot have been reused.
            unsafe { libc::kill(p.child.id() as i32, sig) };
        }
    }

    /// Waits for the slot's process to exit (after a signal); returns its exit code.
    pub(crate) fn reap(&mut self, slot: usize, timeout: Duration) -> Option<i32> {
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
    pub(crate) fn leaders(&self) -> Vec<usize> {
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

    pub(crate) fn started(&self, slot: usize) -> bool {
        let Some(p) = &self.peers[slot] else {
            return false;
        };
        let ev = self.events.lock().unwrap();
        ev.iter().any(|e| e.slot == slot && e.gen == p.gen)
    }

    /// Waits until exactly one leader and every peer started; returns the leader.
    pub(crate) fn settle(&self, timeout: Duration) -> Option<usize> {
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
    pub(crate) fn next_raise(&self, after: i64, not: usize, timeout: Duration) -> Option<i64> {
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
    pub(crate) fn overlap(&self, from: i64, to: i64) -> i64 {
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
    pub(crate) fn lowered(&self, slot: usize, after: i64) -> Option<i64> {
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

    pub(crate) fn kill_all(&mut self) {
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

pub(crate) fn build_impl(name: &str) -> Impl {
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

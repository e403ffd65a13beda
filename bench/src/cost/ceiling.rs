//! Part 2: the server's ceiling in checks/s, and what each check costs at it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::thread;

use super::counters::{counters, spent};
use super::script::{pgbench, script, Role, Who};
use leadership_pgkit::pg::PgServer;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Load {
    Followers,
    Leaders,
    Mix,
}

impl Load {
    pub(super) fn label(self) -> &'static str {
        match self {
            Load::Followers => "followers",
            Load::Leaders => "leaders",
            Load::Mix => "mix (10 processes per flag)",
        }
    }
}

/// Backends waiting for a lock, sampled every 200 ms by one psql (`\watch`) until dropped.
pub(super) struct LockSampler {
    pub(super) child: std::process::Child,
    pub(super) samples: Arc<Mutex<Vec<(u32, u32)>>>,
}

impl LockSampler {
    pub(super) fn start(pg: &PgServer) -> LockSampler {
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
    pub(super) fn finish(mut self) -> (f64, f64) {
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
pub(super) struct Run {
    pub(super) tps: f64,
    pub(super) cpu_us: f64,
    pub(super) xids: f64,
    pub(super) wal: f64,
    pub(super) syncs: f64,
    pub(super) lock_waiting: f64,
    pub(super) active: f64,
}

pub(super) fn median(mut v: Vec<f64>) -> f64 {
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
pub(super) fn ceiling(
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

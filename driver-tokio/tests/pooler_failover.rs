//! A fleet behind pgbouncer in transaction pooling through a failover that loses writes, with
//! pgbouncer repointed by a reload (issue 25): the processes' client connections stay open, so
//! a process that sent nothing during the outage hears of the new server by no new connection
//! (no `Input::Connected`); only what its statements carry can tell it.
//!
//! - **Lagging standby.** Three tokio flags (lease 1 s) lead and follow through pgbouncer; the
//!   standby is detached, the leader renews at least [`LOST_RENEWS`] times more on the primary
//!   (writes the standby never gets), the primary crashes (immediate shutdown), the standby is
//!   promoted and pgbouncer is repointed to it (`RELOAD`). The promoted server has the leader's
//!   row at an older version whose lease has expired by its clock, while the old leader still
//!   believes in the lease its lost renews granted.
//! - **Another cluster.** The same, with a second cluster (its own initdb: another system
//!   identifier, the same timeline) holding a copy of the table taken before the leader's last
//!   renews swapped in instead of a standby.
//! - **A newcomer after the failover.** A lost handover (the leader closes, another takes over
//!   on the primary only) and a process started after the promotion, which never saw that term:
//!   its first token must be above every token of the lost history.
//!
//! Each failover test runs six trials, two of each [`Fault`]: nothing else (one pgbouncer), the
//! old leader cut off from pgbouncer at the crash (its zone partitioned with the primary), or a
//! pgbouncer per process repointed one after another, the old leader's last. The crash comes
//! right after one of the leader's renews, at a moment when a follower's next check is due
//! after the failover and before the leader's deadline ([`crash_moment`]): the moment at which
//! a takeover on the new server overlaps.
//!
//! The verdicts come from the drivers' own term records (exact instants, [`observe`]): 0
//! overlap; fencing tokens strictly increasing over all terms of all processes in the order
//! they began, the lost history's included; and the old leader's term ends by the deadline of
//! the last lease the old history granted it (the server swapped in never had that lease, so
//! nothing there can renew it). Nothing is judged by sampling, and no assertion
//! bounds how fast anything happens: a loaded machine makes the failover slower (more processes
//! send a statement during the outage and learn of the new server by reconnecting), not the
//! verdict different. Each trial asserts that its setup happened (writes were really lost: the
//! server swapped in has a version below the old leader's last renew) and starts over, with new
//! servers, when it did not (say, the leader lost its term before the crash).
//!
//! How these fail on main before the `identity` change: a follower whose connection survived
//! the swap runs its check on the new server, finds the old row expired there and takes it
//! over, while the old leader believes until its deadline (it cannot reach the new server) or
//! its next check (measured: 32 of 32 trials cut off or behind their own pgbouncer overlapped,
//! by 0.26-0.74 s, over 4 runs). With nothing else, the old leader's own renew reaches the new
//! server first (it renews every 0.45-0.5 s, a follower checks a lease after the row it read,
//! that is after two renews), takes the expired row over with a version above its own (the
//! floor), and the core counts that a renewal: the term goes on with its old token across the
//! lost writes (16 of 16), and an overlap needs a leader slower than its schedule. And a process
//! that never saw the lost history writes `stale + 1`, at or below the lost tokens.
//!
//! [`observe`]: leadership_driver_testkit::observe

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use leadership_driver_testkit::observe::{Logs, Record, Term};
use leadership_pgkit::helpers::{psql, wait_until};
use leadership_pgkit::pg::{PgServer, ServerOptions};
use leadership_pgkit::pgbouncer::{BouncerOptions, PgBouncer, PoolMode};
use leadership_pgkit::proxy::Proxy;
use leadership_pgkit::standby::{pair, ReplicationMode, Standby};
use leadership_tokio::Flag;
use tokio::runtime::Runtime;
use tokio_postgres::NoTls;

const INTERVAL: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_millis(250);
const PROCESSES: usize = 3;
/// Renews the leader makes on the primary after the standby stops receiving (or after the copy
/// of the table was taken): all of them are lost. Two renews are a lease: the promoted row has
/// expired by the time the fleet can reach it.
const LOST_RENEWS: i64 = 3;
/// Trials of each failover test.
const TRIALS: u64 = 6;
/// How often a trial whose setup did not happen is started over.
const ATTEMPTS: u64 = 3;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn row(pg: &PgServer) -> Option<i64> {
    psql(
        pg,
        "SELECT version FROM leadership_flags WHERE name = 'job'",
    )
    .parse()
    .ok()
}

fn start(rt: &Runtime, conn: &str, process: &str, seed: u64) -> Flag {
    let builder = Flag::builder("job", process)
        .connect_str(conn)
        .interval(INTERVAL)
        .timeout(TIMEOUT)
        .seed(seed);
    rt.block_on(builder.start(NoTls))
        .unwrap_or_else(|e| panic!("{process}: {e}"))
}

fn leaders(flags: &[Flag]) -> Vec<usize> {
    (0..flags.len()).filter(|&i| flags[i].is_raised()).collect()
}

/// Which server is swapped in under pgbouncer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Swap {
    /// The primary's standby, detached, promoted.
    LaggingStandby,
    /// Another cluster (its own initdb) with a copy of the table taken before the lost renews.
    OtherCluster,
}

/// What else happens at the failover, and where the poolers are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Nothing else: one pgbouncer for the fleet, repointed once.
    Plain,
    /// One pgbouncer, and the old leader's host is cut off from it at the crash (a black hole
    /// between them, as when the zone of the primary and the old leader is partitioned away),
    /// healed once the old leader's lease has run out.
    LeaderCutOff,
    /// A pgbouncer beside each process (a sidecar per host), repointed one after another, the
    /// old leader's last: once its lease has run out (the order an operator or an automation
    /// may take; a host that is slow to follow).
    PoolerPerProcess,
}

impl Fault {
    /// The faults of the trials, in turn.
    const ALL: [Fault; 3] = [Fault::Plain, Fault::LeaderCutOff, Fault::PoolerPerProcess];
}

#[derive(Clone, Copy, Debug)]
struct Setup {
    swap: Swap,
    fault: Fault,
    seed: u64,
}

/// What one trial saw.
struct Outcome {
    setup: Setup,
    record: Record,
    /// Who led before the failover, its token and its last version (committed on the primary).
    leader: String,
    token: i64,
    last_version: i64,
    /// The row's version on the server swapped in, as it was when swapped in.
    swapped_version: i64,
    /// When the crash began, and when the (first) pgbouncer pointed at the new server.
    crash: Instant,
    repointed: Instant,
    /// Whether the crash came when a follower's next check was due before the leader's
    /// deadline (the moment a takeover can overlap); see [`crash_moment`].
    aimed: bool,
    /// The deadline of the old leader's last lease from the old history (lease clock).
    old_deadline_ns: Option<u64>,
    /// Setups started over before this one happened.
    retries: u64,
}

/// A server's port and the row's version there.
type PgServerRef = (u16, i64);

/// Why a setup did not happen (the trial starts over).
struct NoSetup(String);

fn trial(setup: Setup) -> Outcome {
    let mut why = Vec::new();
    for attempt in 0..ATTEMPTS {
        let seed = setup.seed * 100 + attempt * 10;
        match attempt_trial(Setup { seed, ..setup }) {
            Ok(mut o) => {
                o.retries = attempt;
                o.setup.seed = setup.seed;
                return o;
            }
            Err(NoSetup(w)) => {
                eprintln!("{setup:?}: setup did not happen, starting over: {w}");
                why.push(w);
            }
        }
    }
    panic!("{setup:?}: the setup never happened in {ATTEMPTS} attempts: {why:?}");
}

/// Room left for the failover (crash, promotion, repoint) before a follower's check is due.
const FAILOVER_ROOM: Duration = Duration::from_millis(250);

/// When a follower's next check is due, from what its last one returned: at the lease's
/// expiry by the database's clock, plus 1 ms and up to `jitter × retry interval` (20 ms); at
/// most an interval after the check (`schedule_expiry` in the core).
fn next_check(flag: &Flag) -> Option<(Instant, Instant)> {
    let h = flag.current_holder()?;
    if h.expired {
        return None;
    }
    let wait = INTERVAL.saturating_sub(h.lease_age?).min(INTERVAL);
    let at = h.checked_at + wait + Duration::from_millis(1);
    Some((at, at + Duration::from_millis(25)))
}

/// Waits for a moment to crash at, right after one of the leader's renews (its deadline as far
/// ahead as it gets): one at which a follower's next check is due after the failover can be
/// done and before the leader's deadline, so that a takeover on the new server would overlap.
/// Gives up after ten renews (returns false: the crash comes then anyway). Only the chance of
/// seeing a failure depends on this; the verdict does not.
fn crash_moment(leader: &Flag, followers: &[&Flag]) -> bool {
    for _ in 0..10 {
        let Some(from) = leader.lease() else {
            return false;
        };
        let renewed = Instant::now() + INTERVAL;
        let lease = loop {
            match leader.lease() {
                Some(l) if l.version > from.version => break Some(l),
                Some(_) if Instant::now() < renewed => {
                    std::thread::sleep(Duration::from_micros(500))
                }
                _ => break None,
            }
        };
        let Some(lease) = lease else { return false };
        // The followers due at this renew have checked by now.
        std::thread::sleep(Duration::from_millis(30));
        let now = Instant::now();
        let due = followers
            .iter()
            .filter_map(|f| next_check(f))
            .any(|(lo, hi)| {
                lo > now + FAILOVER_ROOM && hi + Duration::from_millis(50) < lease.deadline
            });
        if due && leader.lease().is_some_and(|l| l.version == lease.version) {
            return true;
        }
    }
    false
}

fn attempt_trial(setup: Setup) -> Result<Outcome, NoSetup> {
    let rt = runtime();
    let (mut primary, mut standby) = match setup.swap {
        Swap::LaggingStandby => {
            let (p, s) = pair(ReplicationMode::Async).unwrap();
            (p, Some(s))
        }
        Swap::OtherCluster => (PgServer::start().unwrap(), None),
    };
    // pgbouncer waits `server_login_retry` (15 s by default) after a failed connect before it
    // tries again, and a RELOAD to another server does not end that wait: every client would
    // wait (and time out) for up to 15 s after one check reached the crashed primary.
    let options = BouncerOptions::new(PoolMode::Transaction).config("server_login_retry = 0");
    let poolers = match setup.fault {
        Fault::PoolerPerProcess => PROCESSES,
        _ => 1,
    };
    let mut bouncers: Vec<PgBouncer> = (0..poolers)
        .map(|_| PgBouncer::start_with(&primary, &options).unwrap())
        .collect();
    // Each process's path to its pgbouncer (a proxy that can black-hole it).
    let paths: Vec<Proxy> = (0..PROCESSES)
        .map(|i| Proxy::start(([127, 0, 0, 1], bouncers[i % poolers].port())).unwrap())
        .collect();
    let logs = Logs::new();
    let flags: Vec<Flag> = (0..PROCESSES)
        .map(|i| {
            let conn = format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres",
                paths[i].port()
            );
            let f = start(&rt, &conn, &format!("p{i}"), setup.seed + i as u64);
            logs.add(&format!("p{i}"), &f);
            f
        })
        .collect();
    let close = |flags: &[Flag]| {
        rt.block_on(async {
            for f in flags {
                let _ = tokio::time::timeout(Duration::from_secs(5), f.close()).await;
            }
        })
    };
    let mut elected = None;
    wait_until("one leader", Duration::from_secs(20), || {
        match leaders(&flags)[..] {
            [one] => elected = Some(one),
            _ => elected = None,
        }
        elected.is_some()
    });
    let l = elected.unwrap();
    let leader = &flags[l];
    let followers: Vec<&Flag> = (0..PROCESSES)
        .filter(|&i| i != l)
        .map(|i| &flags[i])
        .collect();
    let token = leader.lease().map(|l| l.token).unwrap_or_default();

    // The server to swap in, as it is before the lost renews.
    let mut other = None;
    match &standby {
        Some(s) => {
            s.wait_caught_up().unwrap();
            s.detach().unwrap();
        }
        None => {
            let copy = PgServer::start_with(&ServerOptions::new().own_initdb()).unwrap();
            copy.load(&primary.dump_table("leadership_flags").unwrap())
                .unwrap();
            other = Some(copy);
        }
    }
    let swapped_in = |standby: &Option<Standby>, other: &Option<PgServer>| -> PgServerRef {
        match (standby, other) {
            (Some(s), _) => (s.port(), row(s).unwrap_or_default()),
            (None, Some(o)) => (o.port(), row(o).unwrap_or_default()),
            _ => unreachable!(),
        }
    };
    let (_, before) = swapped_in(&standby, &other);
    // The lost renews.
    let lost = Instant::now() + INTERVAL * (LOST_RENEWS as u32 + 4);
    while leader
        .lease()
        .is_some_and(|lease| lease.version < before + LOST_RENEWS)
        && Instant::now() < lost
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    if leader
        .lease()
        .is_none_or(|lease| lease.version < before + LOST_RENEWS)
    {
        close(&flags);
        return Err(NoSetup(format!(
            "p{l} did not renew {LOST_RENEWS} times after version {before} while leading"
        )));
    }
    let aimed = crash_moment(leader, &followers);
    let last_version = leader.lease().map_or(0, |lease| lease.version);
    let crash = Instant::now();
    if setup.fault == Fault::LeaderCutOff {
        paths[l].black_hole(true).unwrap();
    }
    primary.crash();
    if let Some(s) = standby.as_mut() {
        s.promote_now().unwrap();
    }
    let (port, swapped_version) = swapped_in(&standby, &other);
    // The last lease the old history granted the leader (a reply sent before the crash has
    // been handled by now): nothing can renew it, and no process reaches the new server yet.
    let old_deadline_ns = leader
        .terms()
        .last()
        .filter(|t| t.token == token)
        .map(|t| t.deadline_ns);
    let leaders_pooler = l % poolers;
    for (i, b) in bouncers.iter_mut().enumerate() {
        if i != leaders_pooler {
            b.repoint_port(port).unwrap();
        }
    }
    let mut repointed = Instant::now();
    if poolers == 1 {
        bouncers[0].repoint_port(port).unwrap();
        repointed = Instant::now();
    }
    if setup.fault != Fault::Plain {
        // The old leader's pooler is repointed, or its path healed, once its lease has run out.
        let ran_out = Instant::now() + INTERVAL * 2;
        while leader.is_raised() && Instant::now() < ran_out {
            std::thread::sleep(Duration::from_millis(5));
        }
        if poolers > 1 {
            bouncers[leaders_pooler].repoint_port(port).unwrap();
        }
        paths[l].black_hole(false).unwrap();
    }
    if swapped_version >= last_version {
        close(&flags);
        return Err(NoSetup(format!(
            "no writes lost: the new server has version {swapped_version}, p{l} last wrote \
             {last_version}"
        )));
    }
    // Every fence ends a lease and a margin after a process learns of the new server; the
    // takeover follows at once. Three leases see it through on a loaded machine as well.
    std::thread::sleep(INTERVAL * 3);
    let record = logs.record();
    close(&flags);
    drop(flags);
    drop(paths);
    drop(bouncers);
    drop(standby);
    drop(other);
    Ok(Outcome {
        setup,
        record,
        leader: format!("p{l}"),
        token,
        last_version,
        swapped_version,
        crash,
        repointed,
        aimed,
        old_deadline_ns,
        retries: 0,
    })
}

/// Pairs of consecutive terms (in the order they began) whose tokens do not strictly increase.
fn token_regressions(terms: &[Term]) -> Vec<(Term, Term)> {
    terms
        .windows(2)
        .filter(|w| w[1].token <= w[0].token)
        .map(|w| (w[0].clone(), w[1].clone()))
        .collect()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn signed(t: Instant, zero: Instant) -> String {
    if t >= zero {
        format!("+{} ms", (t - zero).as_millis())
    } else {
        format!("-{} ms", (zero - t).as_millis())
    }
}

impl Outcome {
    /// How long the old leader's term went on past the deadline of its last lease from the old
    /// history, if it did: only a win on the server swapped in can have extended it.
    fn kept_across(&self) -> Option<Duration> {
        let until = self.old_deadline_ns?;
        let term = self
            .record
            .terms
            .iter()
            .find(|t| t.process == self.leader && t.token == self.token)?;
        (term.ended_ns > until).then(|| Duration::from_nanos(term.ended_ns - until))
    }

    /// One line of figures.
    fn line(&self) -> String {
        let overlaps = self.record.overlaps();
        let max = overlaps.iter().map(|(_, _, d)| *d).max();
        let old_end = self
            .record
            .terms
            .iter()
            .find(|t| t.process == self.leader && t.token == self.token)
            .map(|t| t.believed_until());
        let next = self.record.terms.iter().find(|t| {
            t.began >= self.crash && !(t.process == self.leader && t.token == self.token)
        });
        let tokens = self
            .record
            .terms
            .iter()
            .map(|t| format!("{}:{}", t.process, t.token))
            .collect::<Vec<_>>()
            .join(" -> ");
        format!(
            "{:?} {:?} seed {}{}{}: old leader {} token {} last wrote {}, new server at {}; repointed \
             {} after the crash; old lease ends {} after the repoint{}, next term {}; overlaps {} \
             (max {}), token order violations {}; terms {tokens}",
            self.setup.swap,
            self.setup.fault,
            self.setup.seed,
            if self.aimed { "" } else { " (not aimed)" },
            if self.retries > 0 {
                format!(" (after {} setups started over)", self.retries)
            } else {
                String::new()
            },
            self.leader,
            self.token,
            self.last_version,
            self.swapped_version,
            ms(self.repointed - self.crash),
            old_end.map_or("-".into(), |e| signed(e, self.repointed)),
            self.kept_across().map_or(String::new(), |d| format!(
                " (renewed on the new server: {} past its last lease)",
                ms(d)
            )),
            next.map_or("none".into(), |n| format!(
                "{} token {} at {} after the repoint",
                n.process,
                n.token,
                signed(n.began, self.repointed)
            )),
            overlaps.len(),
            max.map_or("-".into(), ms),
            token_regressions(&self.record.terms).len(),
        )
    }
}

/// Trials run at once: a failover that takes long on a starved machine lets every process
/// check during the outage (and be fenced by its reconnection, which hides the defect); more
/// at once would not make the file much faster on two cores.
const PARALLEL: usize = 4;

/// Every failover trial of this file, run once, [`PARALLEL`] at a time: the first test to ask
/// starts them and the other waits. A trial that panicked fails only the test that looks at it.
fn trials() -> &'static [(Setup, Result<Outcome, String>)] {
    static ALL: OnceLock<Vec<(Setup, Result<Outcome, String>)>> = OnceLock::new();
    ALL.get_or_init(|| {
        let setups: Vec<Setup> = [Swap::LaggingStandby, Swap::OtherCluster]
            .into_iter()
            .flat_map(|swap| {
                (0..TRIALS).map(move |seed| Setup {
                    swap,
                    fault: Fault::ALL[seed as usize % Fault::ALL.len()],
                    seed,
                })
            })
            .collect();
        let queue = Mutex::new(setups.clone().into_iter().enumerate());
        let results = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..PARALLEL {
                scope.spawn(|| loop {
                    let Some((i, setup)) = queue.lock().unwrap().next() else {
                        return;
                    };
                    let outcome = std::panic::catch_unwind(|| trial(setup)).map_err(|e| {
                        let why = e
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        format!("trial {setup:?} panicked: {why}")
                    });
                    results.lock().unwrap().push((i, setup, outcome));
                });
            }
        });
        let mut results = results.into_inner().unwrap();
        results.sort_by_key(|(i, _, _)| *i);
        results.into_iter().map(|(_, s, o)| (s, o)).collect()
    })
}

/// The trials of `swap`, each unwrapped.
fn run_trials(swap: Swap) -> Vec<&'static Outcome> {
    trials()
        .iter()
        .filter(|(s, _)| s.swap == swap)
        .map(|(_, o)| o.as_ref().unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

fn verdict(outcomes: &[&Outcome]) {
    for o in outcomes {
        eprintln!("{}", o.line());
    }
    let overlapping = outcomes
        .iter()
        .filter(|o| !o.record.overlaps().is_empty())
        .count();
    let max = outcomes
        .iter()
        .flat_map(|o| o.record.overlaps())
        .map(|(_, _, d)| d)
        .max();
    let disordered = outcomes
        .iter()
        .filter(|o| !token_regressions(&o.record.terms).is_empty())
        .count();
    let kept = outcomes
        .iter()
        .filter(|o| o.kept_across().is_some())
        .count();
    eprintln!(
        "{} trials: {overlapping} with an overlap (max {}), {disordered} with tokens out of \
         order, {kept} with the old term renewed on the server swapped in",
        outcomes.len(),
        max.map_or("-".into(), ms)
    );
    let trace = |o: &Outcome| format!("{}\n{}", o.line(), o.record.describe_from(o.repointed));
    // Overlaps first, in every trial: the failure that matters most is the one reported.
    for o in outcomes {
        assert!(
            o.record.overlaps().is_empty(),
            "two leaders at one instant:\n{}",
            trace(o)
        );
    }
    for o in outcomes {
        let trace = trace(o);
        assert!(
            token_regressions(&o.record.terms).is_empty(),
            "fencing tokens not strictly increasing across terms:\n{trace}"
        );
        assert!(
            o.kept_across().is_none(),
            "the old leader's term went on past the deadline of its last lease from the old \
             history (by {:?}): a win on the server swapped in, which never had that lease, \
             counted as its renewal:\n{trace}",
            o.kept_across().unwrap_or_default()
        );
        assert!(
            o.record
                .terms
                .iter()
                .any(|t| t.believed_until() > o.repointed + INTERVAL * 2),
            "someone leads after the failover:\n{trace}"
        );
    }
}

/// A lagging standby promoted under pgbouncer (transaction pooling), six trials, two of each
/// [`Fault`]: 0 overlap and fencing tokens strictly increasing across every term.
#[test]
fn a_lagging_standby_swapped_in_under_pgbouncer_never_gives_two_leaders() {
    verdict(&run_trials(Swap::LaggingStandby));
}

/// Another cluster (a copy of the table taken before the leader's last renews) swapped in
/// under pgbouncer, six trials, two of each [`Fault`]: 0 overlap and fencing tokens strictly
/// increasing.
#[test]
fn another_cluster_swapped_in_under_pgbouncer_never_gives_two_leaders() {
    verdict(&run_trials(Swap::OtherCluster));
}

/// What the newcomer trial saw.
struct Newcomer {
    record: Record,
    /// The terms begun on the primary (the lost handover's among them).
    history: Vec<Term>,
    /// The row's version on the promoted server.
    promoted_version: i64,
    /// The lost term: its process and token.
    lost: (String, i64),
}

fn attempt_newcomer(seed: u64) -> Result<Newcomer, NoSetup> {
    let rt = runtime();
    let (mut primary, mut standby) = pair(ReplicationMode::Async).unwrap();
    let conn = primary.conn_string();
    let logs = Logs::new();
    let flags: Vec<Flag> = (0..2)
        .map(|i| {
            let f = start(&rt, &conn, &format!("p{i}"), seed + i as u64);
            logs.add(&format!("p{i}"), &f);
            f
        })
        .collect();
    let mut first = None;
    wait_until("one leader", Duration::from_secs(20), || {
        first = match leaders(&flags)[..] {
            [one] => Some(one),
            _ => None,
        };
        first.is_some()
    });
    let a = first.unwrap();
    let b = 1 - a;
    standby.wait_caught_up().unwrap();
    standby.detach().unwrap();
    let detached_at = row(&standby).unwrap_or_default();
    // The lost handover: the leader closes (releasing the row, which wakes the other at once
    // on a direct connection) and the other takes over on the primary alone.
    rt.block_on(flags[a].close()).unwrap();
    let taken = Instant::now() + INTERVAL * 5;
    while Instant::now() < taken && !flags[b].is_raised() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let lost = flags[b].lease();
    primary.crash();
    standby.promote().unwrap();
    let promoted_version = row(&standby).unwrap_or_default();
    let Some(lost) = lost else {
        rt.block_on(flags[b].close()).ok();
        return Err(NoSetup(format!("p{b} did not take over after p{a} closed")));
    };
    if lost.token <= promoted_version || detached_at != promoted_version {
        rt.block_on(flags[b].close()).ok();
        return Err(NoSetup(format!(
            "the handover was not lost: p{b}'s token {}, the promoted server's version \
             {promoted_version} (at the detach: {detached_at})",
            lost.token
        )));
    }
    // p1's connection points at the crashed primary: it never reaches the new history.
    let history = logs.terms();
    let newcomer = start(&rt, &standby.conn_string(), "newcomer", seed + 7);
    logs.add("newcomer", &newcomer);
    wait_until("the newcomer leads", Duration::from_secs(30), || {
        newcomer.is_raised()
    });
    let record = logs.record();
    rt.block_on(async {
        for f in [&flags[b], &newcomer] {
            let _ = tokio::time::timeout(Duration::from_secs(5), f.close()).await;
        }
    });
    Ok(Newcomer {
        record,
        history,
        promoted_version,
        lost: (format!("p{b}"), lost.token),
    })
}

/// A process started after a failover that lost a handover (it never saw the lost term, nor
/// any row of the old history) takes its first term with a fencing token above every token of
/// the lost history, which a resource fenced by the lost term's token may have seen.
#[test]
fn a_process_started_after_a_lost_handover_takes_a_token_above_the_lost_history() {
    let mut why = Vec::new();
    let outcome = (0..ATTEMPTS)
        .find_map(|attempt| match attempt_newcomer(1000 + attempt * 10) {
            Ok(o) => Some(o),
            Err(NoSetup(w)) => {
                eprintln!("newcomer: setup did not happen, starting over: {w}");
                why.push(w);
                None
            }
        })
        .unwrap_or_else(|| panic!("the setup never happened: {why:?}"));
    let trace = outcome.record.describe();
    let highest = outcome.history.iter().map(|t| t.token).max().unwrap();
    let first = outcome
        .record
        .terms
        .iter()
        .find(|t| t.process == "newcomer")
        .unwrap_or_else(|| panic!("the newcomer led:\n{trace}"));
    eprintln!(
        "lost term {} token {}, highest token of the old history {highest}, promoted server at \
         version {}, the newcomer's first token {}",
        outcome.lost.0, outcome.lost.1, outcome.promoted_version, first.token
    );
    assert!(
        first.token > highest,
        "the newcomer's first token {} is not above the lost history's {highest}:\n{trace}",
        first.token
    );
    assert!(
        outcome.record.overlaps().is_empty(),
        "two leaders at one instant:\n{trace}"
    );
}

//! Part 3: the fleet, from the per-check figures and the schedule the core follows.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::ceiling::Load;
use super::counters::Spent;
use super::script::Who;
use super::FREEZE_MAX_AGE;
use leadership_sim::sim::{self, SimConfig};

/// Checks per day of one leader and of one follower, as the simulator's fault-free day
/// counts them with the core's default settings for `interval`; the Go flag's per process.
pub(crate) struct Schedule {
    pub(crate) leader: f64,
    pub(crate) follower: f64,
    pub(crate) go: f64,
    pub(crate) renew: Duration,
}

pub(crate) fn schedule(interval: Duration) -> Schedule {
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

pub(super) fn si(x: f64) -> String {
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

pub(super) fn period(xids_per_day: f64) -> String {
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
pub(super) fn fleet(
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

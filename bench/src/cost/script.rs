//! Part 1's and 2's material: which statements make a check, and pgbench running them.

use std::path::Path;
use std::process::{Command, Stdio};

use super::{LONG_LEASE, PGBENCH};
use leadership_core::sql::{Statements, Table};
use leadership_pgkit::pg::PgServer;
use leadership_sim::check_variants::{self, BEFORE, GATED_INSERT};

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
    pub(super) const ALL: [Who; 4] = [Who::Ours, Who::GatedInsert, Who::Before, Who::Go];

    pub(super) fn label(self) -> &'static str {
        match self {
            Who::Ours => "ours (UPDATE + INSERT … DO NOTHING)",
            Who::GatedInsert => "candidate A (gated INSERT … DO UPDATE)",
            Who::Before => "ours before (INSERT … ON CONFLICT DO UPDATE)",
            Who::Go => "Go flag",
        }
    }

    pub(super) fn short(self) -> &'static str {
        match self {
            Who::Ours => "ours",
            Who::GatedInsert => "A",
            Who::Before => "before",
            Who::Go => "Go",
        }
    }

    /// pgbench's `-M`: ours prepared once per connection, the Go flag's as lib/pq sends them.
    pub(super) fn mode(self) -> &'static str {
        if self == Who::Go {
            "extended"
        } else {
            "prepared"
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    Leader,
    Follower,
}

/// A pgbench script of one check. `random`: the flag is random among `:nflags` rows and a
/// leader of ours takes it over (lease 0); otherwise the flag is `:n` and a leader renews the
/// version it holds, `:version`, which `\gset` replaces with the one its win returns.
pub(super) fn script(who: Who, role: Role, random: bool) -> String {
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
pub(super) struct Pgbench {
    pub(super) transactions: u64,
    pub(super) tps: f64,
    pub(super) latency_ms: f64,
    pub(super) ok: bool,
    pub(super) output: String,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn pgbench(
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

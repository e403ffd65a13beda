//! `bench fleet`: server statements/s and CPU for N flags.

use std::fmt::Write as _;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use crate::peers::{sleep_ms, Impl};
use leadership_pgkit::pg::PgServer;

/// CPU ticks (user + system) of the postmaster and all its children.
pub(crate) fn server_ticks(pg: &PgServer) -> u64 {
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

pub(crate) fn total_calls(pg: &PgServer) -> u64 {
    pg.psql("select coalesce(sum(calls), 0) from pg_stat_statements s join pg_roles r on r.oid = s.userid where r.rolname like 'f%'")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// N flags at interval 2 s: Rust as one process holding N flags (N connections), Go as N
/// processes. Server statements/s and CPU over 20 s.
/// `set`: our flags in one `FlagSet` over one connection (`tokio_peer --set`).
pub(crate) fn fleet(imp: &Arc<Impl>, pg: &PgServer, sizes: &[usize], set: bool) -> String {
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

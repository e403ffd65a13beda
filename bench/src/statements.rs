//! `bench statements`: statements and round trips per check.

use std::fmt::Write as _;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::peers::{sleep_ms, Fleet, Impl};
use leadership_pgkit::pg::PgServer;

/// Statements per check by role, and client socket writes per check by strace.
pub(crate) fn statements(imp: &Arc<Impl>, pg: &PgServer) -> String {
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

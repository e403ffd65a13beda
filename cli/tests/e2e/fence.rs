//! `run` with `LEADERSHIP_FENCE_SQL`, as issue 26 found the failure: two `leadership run` whose
//! command writes a row per transaction (`BEGIN; …; INSERT; COMMIT`, one message per
//! transaction on one `psql` session) to a table of the same database, each row tagged with
//! `LEADERSHIP_TOKEN`. The leader's network stalls for 4 s (a proxy holds its bytes back in
//! order, then delivers them): its tool lowers at the deadline and kills the command, the
//! other takes over, and the transaction the command had sent arrives after the takeover.
//!
//! Judged by what the user sees, with the server's commit timestamps
//! (`track_commit_timestamp`): a row of the old term that committed after the new term's first
//! row. Fenced: none, in every trial. Without the fence statement: the late row.

use std::process::{Child, Stdio};
use std::thread::sleep;
use std::time::Duration;

use leadership_pgkit::helpers::psql;
use leadership_pgkit::pg::{tool_path, PgServer, ServerOptions};
use leadership_pgkit::proxy::Proxy;

use crate::common::*;

const FENCED_TRIALS: usize = 5;
/// Trials without the fence, until one shows the late row.
const UNFENCED_TRIALS: usize = 3;

/// The command: one psql session, one transaction per line, each sent as one message (`\;`
/// joins statements into one query), every 100 ms; a failed fence leaves the session's
/// transaction aborted, so each line begins with a `ROLLBACK`.
fn command(fenced: bool) -> String {
    let psql = tool_path("psql").expect("psql").display().to_string();
    let fence = if fenced {
        r#"$LEADERSHIP_FENCE_SQL \;"#
    } else {
        ""
    };
    format!(
        r#"while :; do printf '%s\n' "ROLLBACK \; BEGIN \; {fence} INSERT INTO effects (term) VALUES ($LEADERSHIP_TOKEN) \; COMMIT;"; sleep 0.1; done | {psql} -X -q "$EFFECTS_DB" >/dev/null 2>&1"#
    )
}

fn tool(url: &str, process: &str, fenced: bool) -> Child {
    leadership(&[
        "run",
        "--url",
        url,
        "--name",
        "job",
        "--process",
        process,
        "--interval",
        "2s",
        "--",
        "sh",
        "-c",
        &command(fenced),
    ])
    .env("EFFECTS_DB", url)
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("spawn leadership run")
}

fn count(pg: &PgServer, sql: &str) -> i64 {
    psql(pg, sql)
        .parse()
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// One trial on a fresh table: how many rows of the first leader's term committed after the
/// next term's first row.
fn trial(pg: &PgServer, fenced: bool) -> i64 {
    psql(
        pg,
        "drop table if exists effects; delete from leadership_flags; \
         create table effects (term bigint not null)",
    );
    let proxy = Proxy::start(([127, 0, 0, 1], pg.port())).unwrap();
    let via = |port: u16| {
        format!(
            "postgres://{}@127.0.0.1:{port}/postgres?sslmode=disable",
            pg.user()
        )
    };
    let mut a = tool(&via(proxy.port()), "a", fenced);
    wait_until("a's rows", Duration::from_secs(15), || {
        count(pg, "select count(*) from effects") >= 3
    });
    let mut b = tool(&via(pg.port()), "b", fenced);
    sleep(Duration::from_millis(500));
    proxy.black_hole(true).unwrap();
    sleep(Duration::from_secs(4));
    proxy.black_hole(false).unwrap();
    let first: i64 = psql(pg, "select min(term) from effects").parse().unwrap();
    wait_until("b's rows", Duration::from_secs(15), || {
        count(
            pg,
            &format!("select count(*) from effects where term > {first}"),
        ) >= 3
    });
    sleep(Duration::from_secs(1)); // whatever was held is delivered by now
    for t in [&mut a, &mut b] {
        signal(t, libc::SIGTERM);
    }
    for t in [&mut a, &mut b] {
        exit_within(t, Duration::from_secs(15));
    }
    count(
        pg,
        &format!(
            "select count(*) from effects e where e.term = {first} and \
             pg_xact_commit_timestamp(e.xmin) > (select min(pg_xact_commit_timestamp(l.xmin)) \
             from effects l where l.term > {first})"
        ),
    )
}

#[test]
fn a_stalled_leaders_fenced_transactions_never_commit_after_the_next_term_began() {
    let pg =
        PgServer::start_with(&ServerOptions::new().config("track_commit_timestamp = on")).unwrap();
    psql(
        &pg,
        &leadership_core::sql::Statements::new(&Default::default()).create_table,
    );
    let fenced: Vec<i64> = (0..FENCED_TRIALS).map(|_| trial(&pg, true)).collect();
    eprintln!("late rows of the old term, fenced: {fenced:?}");
    assert!(
        fenced.iter().all(|&late| late == 0),
        "fenced late rows: {fenced:?}"
    );
    let mut unfenced = Vec::new();
    while unfenced.len() < UNFENCED_TRIALS && unfenced.iter().all(|&late| late == 0) {
        unfenced.push(trial(&pg, false));
    }
    eprintln!("late rows of the old term, without the fence: {unfenced:?}");
    assert!(
        unfenced.iter().any(|&late| late > 0),
        "without the fence the test must see the late row: {unfenced:?}"
    );
}

//! Every documented exit code. The tool's own are in the sysexits band (64-78), so a command
//! that exits 4 is told apart from the tool's failures; each failure's message names what to
//! change and never a password.

use std::net::TcpListener;
use std::process::Stdio;
use std::time::{Duration, Instant};

use leadership_pgkit::pg::PgServer;

use crate::common::*;

fn code(args: &[&str]) -> Option<i32> {
    output(args).status.code()
}

fn stderr(args: &[&str]) -> (Option<i32>, String) {
    let o = output(args);
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn the_command_s_status_passes_through() {
    let pg = PgServer::start().unwrap();
    let url = pg.url();
    let run = |cmd: &str| {
        code(&[
            "run", "--url", &url, "--name", "pass", "--", "sh", "-c", cmd,
        ])
    };
    assert_eq!(run("exit 0"), Some(0));
    assert_eq!(run("exit 4"), Some(4));
    // A command killed by signal N: 128 + N, like a shell.
    assert_eq!(run("kill -9 $$"), Some(128 + 9));
}

#[test]
fn usage_configuration_and_shape_errors() {
    let pg = PgServer::start().unwrap();
    let url = pg.url();
    // 64: bad arguments (no command after `--`, a duration that is not one).
    assert_eq!(code(&["run", "--url", &url, "--name", "n"]), Some(64));
    let (c, e) = stderr(&["watch", "--url", &url, "--name", "n", "--interval", "soon"]);
    assert_eq!(c, Some(64), "{e}");
    assert!(e.contains("--interval"), "{e}");
    // 78: values that clash, naming the one given; defaults never clash with them.
    let (c, e) = stderr(&["watch", "--url", &url, "--name", "n", "--timeout", "40s"]);
    assert_eq!(c, Some(78), "{e}");
    assert!(e.contains("timeout"), "{e}");
    let (c, e) = stderr(&[
        "run",
        "--url",
        &url,
        "--name",
        "n",
        "--interval",
        "2s",
        "--grace",
        "5s",
        "--",
        "true",
    ]);
    assert_eq!(c, Some(78), "{e}");
    assert!(e.contains("--grace"), "{e}");
    // A margin below interval/1000 (0 included) leaves no room for clock-rate drift.
    let (c, e) = stderr(&[
        "run", "--url", &url, "--name", "n", "--margin", "0s", "--", "true",
    ]);
    assert_eq!(c, Some(78), "{e}");
    assert!(e.contains("--margin") && e.contains("floor"), "{e}");
    let bad = "postgres://u:hunter2@h:notaport/db";
    let (c, e) = stderr(&["status", "--url", bad]);
    assert_eq!(c, Some(78), "{e}");
    assert!(!e.contains("hunter2"), "password leaked: {e}");
    // No URL anywhere: libpq's defaults (localhost:5432), and the failure says where the
    // server came from.
    let (c, e) = stderr(&["status", "--connect-timeout", "1s"]);
    assert_eq!(c, Some(69), "{e}");
    assert!(e.contains("localhost:5432") && e.contains("--url"), "{e}");
    // 65: a table of the wrong shape, naming the column.
    pg.psql("create table wrong (name text primary key, holder text, version int, \"timestamp\" timestamptz)")
        .unwrap();
    let (c, e) = stderr(&["watch", "--url", &url, "--name", "n", "--table", "wrong"]);
    assert_eq!(c, Some(65), "{e}");
    assert!(e.contains("version"), "{e}");
}

#[test]
fn an_interval_too_short_to_run_a_statement_is_refused_at_configuration_naming_interval() {
    let pg = PgServer::start().unwrap();
    let url = pg.url();
    // The case: 10 ms implies a 1 ms timeout, and creating the table was cancelled
    // (exit 70). Now refused before anything reaches the server: the table is not created.
    for sub in [&["watch"][..], &["run"]] {
        let mut args = sub.to_vec();
        args.extend(["--url", &url, "--name", "n", "--interval", "10ms"]);
        if sub == ["run"] {
            args.extend(["--", "true"]);
        }
        let (c, e) = stderr(&args);
        assert_eq!(c, Some(78), "{args:?}: {e}");
        assert!(
            e.contains("--interval 10ms is too short") && e.contains("--interval 100ms or more"),
            "{e}"
        );
    }
    assert_eq!(
        pg.psql("select to_regclass('leadership_flags') is null")
            .unwrap()
            .trim(),
        "t",
        "nothing was written"
    );
    // A timeout given below the floor is named as the timeout.
    let (c, e) = stderr(&["watch", "--url", &url, "--name", "n", "--timeout", "5ms"]);
    assert_eq!(c, Some(78), "{e}");
    assert!(e.contains("--timeout 5ms is below the floor"), "{e}");
}

#[test]
fn server_and_login_errors() {
    let pg = PgServer::start().unwrap();
    let url = pg.url();
    // 69: nothing listens there.
    assert_eq!(
        code(&[
            "status",
            "--url",
            "postgres://postgres@127.0.0.1:1/postgres"
        ]),
        Some(69)
    );
    // 69 within the bound: a host that accepts TCP and never answers (status and release are
    // bounded by the connect timeout, not left hanging).
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
        silent.local_addr().unwrap().port()
    );
    for args in [
        &["status", "--url", &silent_url, "--connect-timeout", "1s"][..],
        &[
            "release",
            "--url",
            &silent_url,
            "--connect-timeout",
            "1s",
            "--name",
            "n",
            "--process",
            "p",
        ][..],
    ] {
        let started = Instant::now();
        assert_eq!(code(args), Some(69), "{args:?}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }
    // 77: the login is refused (an unknown role), unlike a command that exits 4 (above).
    let (c, e) = stderr(&[
        "status",
        "--url",
        &format!(
            "postgres://nobody@127.0.0.1:{}/postgres?sslmode=disable",
            pg.port()
        ),
    ]);
    assert_eq!(c, Some(77), "{e}");
    assert!(e.contains("nobody"), "{e}");
    // 70: a failure at run time the tool cannot classify further: no privilege on the table.
    pg.psql(
        "create table leadership_flags (name text not null primary key, holder text not null, \
             version bigint not null, \"timestamp\" timestamptz not null); \
             create role weak login",
    )
    .unwrap();
    let weak = format!(
        "postgres://weak@127.0.0.1:{}/postgres?sslmode=disable",
        pg.port()
    );
    let (c, e) = stderr(&["status", "--url", &weak]);
    assert_eq!(c, Some(70), "{e}");
    assert!(e.contains("permission denied"), "{e}");
    let _ = url;
}

#[test]
fn the_tool_s_own_outcomes_of_run_and_release() {
    let pg = PgServer::start().unwrap();
    let url = pg.url();
    // 71: the command cannot be started (and the flag is released, not held).
    let (c, e) = stderr(&[
        "run",
        "--url",
        &url,
        "--name",
        "n",
        "--",
        "/nonexistent/command",
    ]);
    assert_eq!(c, Some(71), "{e}");
    assert!(e.contains("/nonexistent/command"), "{e}");
    // 67: release by someone who does not hold the flag.
    let (c, e) = stderr(&[
        "release",
        "--url",
        &url,
        "--name",
        "n",
        "--process",
        "nobody",
    ]);
    assert_eq!(c, Some(67), "{e}");
    assert!(e.contains("does not hold"), "{e}");
    // 74: `run --once` when leadership ends while the command runs (revoked by an operator).
    let mut once = leadership(&[
        "run",
        "--url",
        &url,
        "--name",
        "n",
        "--process",
        "worker",
        "--interval",
        "2s",
        "--once",
        "--",
        "sleep",
        "60",
    ])
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    wait_until("worker leads", Duration::from_secs(10), || {
        pg.psql("select holder from leadership_flags where name = 'n'")
            .unwrap_or_default()
            .trim()
            == "worker"
    });
    assert_eq!(
        code(&[
            "release",
            "--url",
            &url,
            "--name",
            "n",
            "--process",
            "worker"
        ]),
        Some(0)
    );
    assert_eq!(exit_within(&mut once, Duration::from_secs(10)), Some(74));
    // 75 is `run --wait` when the flag is held elsewhere: see once.rs.
}

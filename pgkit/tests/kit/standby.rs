//! A real streaming standby: replication, paused replay, detach, promotion, what a client can
//! see of a promotion and with which privileges, synchronous commit, multi-host strings.

use std::time::{Duration, Instant};

use leadership_pgkit::helpers::{psql, wait_until};
use leadership_pgkit::pg::{tool_path, PgServer};
use leadership_pgkit::standby::{multi_host_conn_string, pair, ReplicationMode};
use postgres::{Client, NoTls};

fn rows(pg: &PgServer) -> String {
    psql(pg, "select string_agg(x, ',' order by x) from t")
}

#[test]
fn a_row_written_on_the_primary_reaches_the_standby_which_is_read_only() {
    let (primary, standby) = pair(ReplicationMode::Async).unwrap();
    assert_ne!(primary.port(), standby.port());
    assert_ne!(primary.data_dir(), standby.data_dir());
    psql(
        &primary,
        "create table t(x text); insert into t values ('a')",
    );
    standby.wait_caught_up().unwrap();
    assert_eq!(rows(&standby), "a");
    assert_eq!(psql(&standby, "select pg_is_in_recovery()"), "t");
    let state = format!(
        "select state, sync_state from pg_stat_replication where application_name = '{}'",
        standby.name()
    );
    assert_eq!(psql(&primary, &state), "streaming|async");
    let err = standby
        .psql("insert into t values ('b')")
        .unwrap_err()
        .to_string();
    assert!(err.contains("read-only transaction"), "{err}");
}

#[test]
fn paused_replay_hides_new_writes_but_promotion_replays_them() {
    let (primary, mut standby) = pair(ReplicationMode::Async).unwrap();
    psql(
        &primary,
        "create table t(x text); insert into t values ('before')",
    );
    standby.wait_caught_up().unwrap();
    standby.pause_replay().unwrap();
    psql(&primary, "insert into t values ('during')");
    // The WAL arrives but is not applied.
    wait_until("the WAL is received", Duration::from_secs(10), || {
        standby.replay_backlog_bytes().unwrap() > 0
    });
    assert!(standby.lag_bytes().unwrap() > 0);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rows(&standby), "before");
    standby.resume_replay().unwrap();
    standby.wait_caught_up().unwrap();
    assert_eq!(rows(&standby), "before,during");

    // Paused again with a write pending, then promoted: the write is NOT lost, since promotion
    // replays what was received (and ends the pause).
    standby.pause_replay().unwrap();
    psql(&primary, "insert into t values ('pending')");
    wait_until("the WAL is received", Duration::from_secs(10), || {
        standby.replay_backlog_bytes().unwrap() > 0
    });
    assert_eq!(rows(&standby), "before,during");
    standby.promote().unwrap();
    assert_eq!(rows(&standby), "before,during,pending");
}

#[test]
fn a_detached_standby_loses_the_last_write_at_promotion_and_shows_a_new_timeline() {
    let (mut primary, mut standby) = pair(ReplicationMode::Async).unwrap();
    psql(
        &primary,
        "create table t(x text); insert into t values ('kept')",
    );
    standby.wait_caught_up().unwrap();
    let system_id = "select system_identifier from pg_control_system()";
    assert_eq!(psql(&primary, system_id), psql(&standby, system_id));
    let started = psql(&standby, "select pg_postmaster_start_time()");
    let walfile_tli = "select left(pg_walfile_name(pg_current_wal_lsn()), 8)";
    assert_eq!(psql(&primary, walfile_tli), "00000001");
    let err = standby.psql(walfile_tli).unwrap_err().to_string();
    assert!(err.contains("recovery is in progress"), "{err}");

    standby.detach().unwrap();
    psql(&primary, "insert into t values ('lost')");
    assert!(standby.lag_bytes().unwrap() > 0);
    primary.stop();
    assert!(standby.lag_bytes().is_err(), "the primary is down");
    let before_promote = Instant::now();
    standby.promote().unwrap();
    let promote_took = before_promote.elapsed();

    assert_eq!(
        rows(&standby),
        "kept",
        "the detached standby never got 'lost'"
    );
    psql(&standby, "insert into t values ('new')");
    assert_eq!(rows(&standby), "kept,new");

    // Evidence of the promotion, right after `pg_ctl promote -w` returned.
    assert_eq!(psql(&standby, walfile_tli), "00000002");
    let history = psql(
        &standby,
        "select name || ' ' || (now() - modification < interval '1 minute') \
         from pg_ls_waldir() where name like '%.history'",
    );
    assert_eq!(history, "00000002.history true");
    let control_tli = psql(&standby, "select timeline_id from pg_control_checkpoint()");
    println!(
        "FACT right after pg_ctl promote -w ({promote_took:?}): pg_control_checkpoint().timeline_id = \
         {control_tli}, pg_walfile_name timeline = 00000002, history file 00000002.history"
    );
    assert!(control_tli == "1" || control_tli == "2", "{control_tli}");
    // The control file shows the new timeline once the end-of-recovery checkpoint is done.
    psql(&standby, "checkpoint");
    assert_eq!(
        psql(&standby, "select timeline_id from pg_control_checkpoint()"),
        "2"
    );
    assert_eq!(
        psql(
            &standby,
            "select now() - checkpoint_time < interval '1 minute' from pg_control_checkpoint()"
        ),
        "t"
    );
    // Unchanged by the promotion.
    assert_eq!(psql(&standby, "select pg_postmaster_start_time()"), started);
    assert_ne!(psql(&standby, "select pg_last_xact_replay_timestamp()"), "");
}

/// Which evidence of a promotion each kind of role may read, on a promoted standby.
#[test]
fn promotion_evidence_is_readable_by_anyone_except_the_wal_dir() {
    let (mut primary, mut standby) = pair(ReplicationMode::Async).unwrap();
    psql(
        &primary,
        "create table t(x text); insert into t values ('a')",
    );
    standby.wait_caught_up().unwrap();
    primary.stop();
    standby.promote().unwrap();
    psql(
        &standby,
        "create role plain login; create role monitor login in role pg_monitor",
    );
    let probes = [
        (
            "pg_control_system",
            "select system_identifier from pg_control_system()",
        ),
        (
            "pg_control_checkpoint",
            "select timeline_id, checkpoint_time from pg_control_checkpoint()",
        ),
        (
            "pg_postmaster_start_time",
            "select pg_postmaster_start_time()",
        ),
        (
            "pg_last_xact_replay_timestamp",
            "select pg_last_xact_replay_timestamp()",
        ),
        ("pg_is_in_recovery", "select pg_is_in_recovery()"),
        (
            "pg_walfile_name",
            "select pg_walfile_name(pg_current_wal_lsn())",
        ),
        (
            "pg_ls_waldir",
            "select name, modification from pg_ls_waldir() where name like '%.history'",
        ),
    ];
    for role in ["postgres", "plain", "monitor"] {
        for (name, sql) in probes {
            let got = standby.psql_as(role, sql);
            println!("FACT as {role}: {name}: {got:?}");
            match (role, name) {
                ("plain", "pg_ls_waldir") => {
                    let err = got.expect_err("a plain role read the WAL dir").to_string();
                    assert!(
                        err.contains("permission denied for function pg_ls_waldir"),
                        "{err}"
                    );
                }
                _ => assert!(got.is_ok(), "{role} {name}: {got:?}"),
            }
        }
    }
}

/// Whether an insert on `pg` is still waiting after 1 s; if so, it is cancelled (psql then
/// warns, and the row is committed locally anyway). `statement_timeout` would not do: the
/// server disables it before the commit, so it never bounds a wait for a synchronous standby.
fn insert_waits(pg: &PgServer) -> bool {
    let mut child = pg
        .psql_command()
        .arg("-c")
        .arg("insert into t values ('x')")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let waiting = "select count(*) from pg_stat_activity where wait_event = 'SyncRep'";
    assert_eq!(psql(pg, waiting), "1", "the insert waits for the standby");
    psql(
        pg,
        "select pg_cancel_backend(pid) from pg_stat_activity where wait_event = 'SyncRep'",
    );
    let out = child.wait_with_output().unwrap();
    let warning = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{warning}");
    assert!(
        warning.contains("canceling wait for synchronous replication"),
        "{warning}"
    );
    true
}

#[test]
fn sync_mode_makes_a_commit_wait_for_the_standby() {
    let (primary, standby) = pair(ReplicationMode::Sync).unwrap();
    psql(&primary, "create table t(x text)");
    let state = format!(
        "select sync_state from pg_stat_replication where application_name = '{}'",
        standby.name()
    );
    assert_eq!(psql(&primary, &state), "sync");
    assert!(!insert_waits(&primary), "attached");
    standby.detach().unwrap();
    assert!(insert_waits(&primary), "detached");
    standby.attach().unwrap();
    assert!(!insert_waits(&primary), "attached again");
    standby.wait_caught_up().unwrap();
    assert_eq!(psql(&standby, "select count(*) from t"), "3");

    // An asynchronous standby: never waits.
    let (primary, standby) = pair(ReplicationMode::Async).unwrap();
    psql(&primary, "create table t(x text)");
    standby.detach().unwrap();
    assert!(!insert_waits(&primary), "async");
}

#[test]
fn a_multi_host_string_finds_the_writable_server_before_and_after_failover() {
    let (mut primary, mut standby) = pair(ReplicationMode::Async).unwrap();
    // The standby first: a client must skip it.
    let conn = multi_host_conn_string(&[&standby, &primary], "read-write");
    assert_eq!(
        conn,
        format!(
            "host=127.0.0.1,127.0.0.1 port={},{} user=postgres dbname=postgres \
             target_session_attrs=read-write",
            standby.port(),
            primary.port()
        )
    );
    let port_via_rust = || {
        let mut c = Client::connect(&conn, NoTls).unwrap();
        let port: i32 = c
            .query_one("select inet_server_port()", &[])
            .unwrap()
            .get(0);
        port as u16
    };
    let port_via_libpq = || {
        let out = std::process::Command::new(tool_path("psql").unwrap())
            .args([
                "-X",
                "-A",
                "-t",
                "-d",
                &conn,
                "-c",
                "select inet_server_port()",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u16>()
            .unwrap()
    };
    assert_eq!(port_via_rust(), primary.port());
    assert_eq!(port_via_libpq(), primary.port());
    primary.stop();
    standby.promote().unwrap();
    assert_eq!(port_via_rust(), standby.port());
    assert_eq!(port_via_libpq(), standby.port());
}

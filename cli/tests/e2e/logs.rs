//! Logs: warnings by default on standard error, so an outage is never silent.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use leadership_pgkit::pg::PgServer;

use crate::common::*;

#[test]
fn a_stopped_server_is_logged_as_a_warning_within_a_retry_interval() {
    let mut pg = PgServer::start().unwrap();
    let url = pg.url();
    let mut child = leadership(&[
        "watch",
        "--url",
        &url,
        "--name",
        "l",
        "--process",
        "logger",
        "--interval",
        "2s",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut lines = Lines::of(&mut child);
    lines.until(Duration::from_secs(10), |l| l["raised"] == true);
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send((Instant::now(), line));
        }
    });
    assert!(rx.try_recv().is_err(), "nothing logged while healthy");
    pg.stop();
    let stopped = Instant::now();
    let (at, line) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a warning after the server stopped");
    assert!(line.contains("WARN") || line.contains("ERROR"), "{line}");
    // Plain text: no terminal escapes, whatever features the build unified (a workspace
    // build once turned them on, and `key=value` readers broke on `key\x1b[2m=`).
    assert!(
        !line.contains('\x1b'),
        "escape codes in a log line: {line:?}"
    );
    // The connection's end is seen at once; at the latest the next check (within interval/2)
    // fails. The bound here is generous for a loaded machine.
    let took = at - stopped;
    assert!(took < Duration::from_secs(5), "{took:?}: {line}");
    eprintln!("first warning {took:?} after the server stopped: {line}");
    signal(&child, libc::SIGTERM);
    assert_eq!(exit_within(&mut child, Duration::from_secs(10)), Some(0));
    let _ = url;
}

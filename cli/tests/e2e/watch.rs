//! `watch`: one line per change, the lowering before the release, defaults that fit short
//! intervals, and an observer that does not compete.

use std::time::Duration;

use leadership_pgkit::pg::PgServer;

use crate::common::*;

fn raised(line: &serde_json::Value) -> bool {
    line["raised"] == true
}

fn version(pg: &PgServer, name: &str) -> i64 {
    pg.psql(&format!(
        "select version from leadership_flags where name = '{name}'"
    ))
    .unwrap()
    .trim()
    .parse()
    .unwrap()
}

#[test]
fn a_sole_leader_prints_one_line_per_renewal_and_its_lowering_before_it_exits() {
    let pg = PgServer::start().unwrap();
    let url = pg.url();
    let mut child = watch(&url, "w", "watcher", &["--interval", "2s"]);
    let mut lines = Lines::of(&mut child);
    lines.until(Duration::from_secs(10), raised);
    let first = version(&pg, "w");
    lines.during(Duration::from_secs(5));
    let renewals = version(&pg, "w") - first;
    let leading = lines.seen.iter().filter(|(_, l)| raised(l)).count() as i64;
    // Each renewal writes version + 1 and moves the deadline: one line each, and none between
    // (before, a line every 10-20 ms: the deadline was rebuilt from the clock on every poll).
    assert!(
        leading <= 1 + renewals,
        "{leading} lines while leading for 5 s with {renewals} renewals: {:?}",
        lines.values()
    );
    assert!(renewals >= 2, "a 2 s lease renews at least every second");
    for (_, l) in lines.seen.iter().filter(|(_, l)| raised(l)) {
        assert_eq!(l["process"], "watcher");
        assert_eq!(l["holder"], "watcher");
        assert!(l["token"].is_i64());
        assert!(l["deadline_unix_ns"].as_i64().unwrap() > l["t_unix_ns"].as_i64().unwrap());
        // The term's own instants: it began before the line was made, and one term has one
        // start, whichever renewal the line reports.
        let began = l["began_clock_ns"].as_u64().unwrap();
        assert!(began <= l["t_clock_ns"].as_u64().unwrap(), "{l}");
        assert!(l["deadline_clock_ns"].as_u64().unwrap() > began, "{l}");
    }
    let starts: std::collections::BTreeSet<_> = lines
        .seen
        .iter()
        .filter_map(|(_, l)| l["began_clock_ns"].as_u64())
        .collect();
    assert_eq!(starts.len(), 1, "one term, one start: {starts:?}");
    let deadlines: Vec<_> = lines
        .seen
        .iter()
        .filter_map(|(_, l)| l["deadline_unix_ns"].as_i64())
        .collect();
    assert!(deadlines.windows(2).all(|w| w[0] < w[1]), "{deadlines:?}");

    signal(&child, libc::SIGTERM);
    lines.read_to_end(Duration::from_secs(10));
    assert_eq!(exit_within(&mut child, Duration::from_secs(5)), Some(0));
    let last = lines.seen.last().unwrap().1.clone();
    assert_eq!(
        last["raised"], false,
        "the lowering is the last line: {last}"
    );
}

#[test]
fn the_old_leader_prints_its_lowering_before_the_next_one_raises() {
    let pg = PgServer::start().unwrap();
    let url = pg.url();
    let mut a = watch(&url, "h", "a", &["--interval", "2s"]);
    let mut a_lines = Lines::of(&mut a);
    a_lines.until(Duration::from_secs(10), raised);
    let mut b = watch(&url, "h", "b", &["--interval", "2s"]);
    let mut b_lines = Lines::of(&mut b);
    b_lines.until(Duration::from_secs(10), |l| l["holder"] == "a");
    signal(&a, libc::SIGTERM);
    // The instants each process recorded, on the one clock of the machine: when b's term
    // began, and when a's reported belief ended (its lowering line, made before the release).
    let raise = b_lines.until(Duration::from_secs(10), raised)["began_clock_ns"]
        .as_i64()
        .unwrap();
    a_lines.read_to_end(Duration::from_secs(10));
    assert_eq!(exit_within(&mut a, Duration::from_secs(5)), Some(0));
    let lowering = a_lines.seen.last().unwrap().1.clone();
    assert_eq!(lowering["raised"], false);
    let lowered = lowering["ended_clock_ns"].as_i64().unwrap();
    assert_eq!(lowering["t_clock_ns"], lowering["ended_clock_ns"]);
    assert!(
        lowered < raise,
        "a's belief ended {} µs after b's began",
        (lowered - raise) / 1000
    );
    // A graceful handover is a release, not a lease's wait.
    assert!(
        raise - lowered < 1_000_000_000,
        "{} ms",
        (raise - lowered) / 1_000_000
    );
    signal(&b, libc::SIGTERM);
    assert_eq!(exit_within(&mut b, Duration::from_secs(10)), Some(0));
}

#[test]
fn a_short_interval_alone_is_a_valid_configuration() {
    let pg = PgServer::start().unwrap();
    let mut child = watch(&pg.url(), "fast", "f", &["--interval", "200ms"]);
    let mut lines = Lines::of(&mut child);
    lines.until(Duration::from_secs(10), raised);
    signal(&child, libc::SIGTERM);
    assert_eq!(exit_within(&mut child, Duration::from_secs(10)), Some(0));
}

#[test]
fn an_observer_names_the_holder_without_competing() {
    let pg = PgServer::start().unwrap();
    let url = pg.url();
    let mut observer = watch(&url, "o", "eye", &["--interval", "2s", "--observe"]);
    let mut seen = Lines::of(&mut observer);
    let mut a = watch(&url, "o", "a", &["--interval", "2s"]);
    seen.until(Duration::from_secs(10), |l| l["holder"] == "a");
    signal(&a, libc::SIGTERM);
    assert_eq!(exit_within(&mut a, Duration::from_secs(10)), Some(0));
    // The release is seen (NOTIFY, or the lease's end at the latest).
    seen.until(Duration::from_secs(10), |l| l["expired"] == true);
    assert!(seen.values().iter().all(|l| l["raised"] == false));
    signal(&observer, libc::SIGTERM);
    assert_eq!(exit_within(&mut observer, Duration::from_secs(10)), Some(0));
    let holders: Vec<String> = pg
        .psql("select holder from leadership_flags where name = 'o'")
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert!(!holders.iter().any(|h| h.trim() == "eye"), "{holders:?}");
}

#[test]
fn a_stalled_reader_gets_the_latest_state_and_the_count_of_lines_dropped_meanwhile() {
    use std::os::fd::AsRawFd;
    let pg = PgServer::start().unwrap();
    // A renewal every 100 ms, each a line.
    let mut child = watch(&pg.url(), "stall", "s", &["--interval", "200ms"]);
    // The smallest pipe (one page, about a dozen lines), so the tool's queue (16 lines) fills
    // within seconds while nobody reads.
    let fd = child.stdout.as_ref().unwrap().as_raw_fd();
    // SAFETY: fcntl on a pipe this test owns.
    assert!(unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, 4096) } >= 4096);
    std::thread::sleep(Duration::from_secs(6));
    let mut lines = Lines::of(&mut child);
    let told = lines
        .until(Duration::from_secs(10), |l| l.get("dropped").is_some())
        .clone();
    assert!(told["dropped"].as_u64().unwrap() >= 1, "{told}");
    // After the gap: the latest state, still the same term (the stalled pipe never stalled
    // the renewals), and lines as usual.
    let first = lines
        .values()
        .into_iter()
        .find(|l| raised(l))
        .unwrap()
        .clone();
    assert!(raised(&told), "{told}");
    assert_eq!(told["token"], first["token"], "one term throughout");
    assert_eq!(
        told["began_clock_ns"], first["began_clock_ns"],
        "one term throughout"
    );
    let gap = lines.seen.len();
    lines.until(Duration::from_secs(5), raised);
    assert!(lines.seen.len() > gap, "lines go on after the gap");
    assert!(lines.seen[gap..]
        .iter()
        .all(|(_, l)| l.get("dropped").is_none()));
    signal(&child, libc::SIGTERM);
    assert_eq!(exit_within(&mut child, Duration::from_secs(10)), Some(0));
}

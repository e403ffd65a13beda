//! The TCP proxy in front of a real server: each knob does what its docs say.

use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use leadership_pgkit::helpers::{server, wait_until};
use leadership_pgkit::pg::PgServer;
use leadership_pgkit::proxy::Proxy;
use postgres::{Client, NoTls, SimpleQueryMessage};

fn proxy_to(pg: &PgServer) -> Proxy {
    Proxy::start(([127, 0, 0, 1], pg.port())).unwrap()
}

fn connect(proxy: &Proxy, timeout: Duration) -> Result<Client, postgres::Error> {
    let mut config: postgres::Config = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        proxy.port()
    )
    .parse()
    .unwrap();
    config.connect_timeout(timeout).connect(NoTls)
}

/// The first column of the first row of `sql`, as text.
fn one(client: &mut Client, sql: &str) -> Result<String, postgres::Error> {
    let rows = client.simple_query(sql)?;
    Ok(rows
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_string()),
            _ => None,
        })
        .expect("a row"))
}

/// An error with its sources, as the postgres crate's top-level message hides the cause.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

fn round_trip(client: &mut Client) -> Duration {
    let t = Instant::now();
    assert_eq!(one(client, "select 1").unwrap(), "1");
    t.elapsed()
}

#[test]
fn forwards_to_the_server_and_counts_one_write_per_query() {
    let pg = server();
    let proxy = proxy_to(&pg);
    let mut client = connect(&proxy, Duration::from_secs(5)).unwrap();
    assert_eq!((proxy.open_connections(), proxy.accepted()), (1, 1));
    let before = proxy.client_writes();
    assert!(before >= 1, "the startup packet is a write");
    for i in 0..5 {
        assert_eq!(
            one(&mut client, &format!("select {i}")).unwrap(),
            i.to_string()
        );
    }
    assert_eq!(proxy.client_writes() - before, 5);
    drop(client);
    wait_until(
        "the closed connection leaves",
        Duration::from_secs(5),
        || proxy.open_connections() == 0,
    );
}

#[test]
fn latency_is_added_per_direction_and_can_change_while_running() {
    let pg = server();
    let proxy = proxy_to(&pg);
    let mut client = connect(&proxy, Duration::from_secs(5)).unwrap();
    let fast = round_trip(&mut client);
    assert!(fast < Duration::from_millis(100), "no latency: {fast:?}");
    proxy.set_latency(Duration::from_millis(150));
    let slow = round_trip(&mut client);
    assert!(
        slow >= Duration::from_millis(300) && slow < Duration::from_millis(600),
        "150 ms each way: {slow:?}"
    );
    proxy.set_latency_each(Duration::from_millis(200), Duration::ZERO);
    let up_only = round_trip(&mut client);
    assert!(
        up_only >= Duration::from_millis(200) && up_only < Duration::from_millis(350),
        "200 ms to the server only: {up_only:?}"
    );
    proxy.set_latency(Duration::ZERO);
    let fast_again = round_trip(&mut client);
    assert!(fast_again < Duration::from_millis(100), "{fast_again:?}");
}

#[test]
fn a_latency_drop_mid_stream_does_not_reorder_data() {
    let pg = server();
    let proxy = proxy_to(&pg);
    let mut client = connect(&proxy, Duration::from_secs(5)).unwrap();
    // A result of several MB arrives in many reads; the latency falls while they are queued,
    // so later chunks are due before earlier ones: they must still be written after them.
    proxy.set_latency_each(Duration::ZERO, Duration::from_millis(300));
    let n = 400_000;
    let query = thread::spawn(move || {
        one(
            &mut client,
            &format!("select string_agg(i::text, ',') from generate_series(1, {n}) i"),
        )
        .unwrap()
    });
    thread::sleep(Duration::from_millis(150));
    proxy.set_latency(Duration::ZERO);
    let got = query.join().unwrap();
    let want: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
    assert!(got == want.join(","), "the result arrived garbled");
}

#[test]
fn a_black_hole_hangs_open_connections_and_times_out_new_connects_until_healed() {
    let pg = server();
    let proxy = proxy_to(&pg);
    let mut client = connect(&proxy, Duration::from_secs(5)).unwrap();
    proxy.black_hole(true).unwrap();
    assert!(proxy.is_black_hole());

    // An open connection: the query is sent and hangs, without error.
    let (tx, rx) = mpsc::channel();
    let query = thread::spawn(move || {
        tx.send(one(&mut client, "select 42")).unwrap();
        client
    });
    assert!(
        rx.recv_timeout(Duration::from_secs(1)).is_err(),
        "a query answered through the black hole"
    );

    // A new connect times out (SYN dropped), it is not refused.
    let addr = SocketAddr::from(([127, 0, 0, 1], proxy.port()));
    let t = Instant::now();
    let err = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert!(t.elapsed() >= Duration::from_millis(900));
    let err = connect(&proxy, Duration::from_secs(1))
        .err()
        .expect("connect fails");
    assert!(chain(&err).contains("timed out"), "{}", chain(&err));

    // A client still retrying its SYN when the hole heals gets through.
    let patient = thread::spawn(move || {
        let t = Instant::now();
        TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map(|_| t.elapsed())
    });
    thread::sleep(Duration::from_millis(1500));
    proxy.black_hole(false).unwrap();
    let waited = patient.join().unwrap().expect("connects after the heal");
    assert!(waited >= Duration::from_millis(1400), "{waited:?}");

    // The held query is answered: nothing was lost.
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5))
            .expect("answered after the heal")
            .unwrap(),
        "42"
    );
    let mut client = query.join().unwrap();
    assert_eq!(one(&mut client, "select 2").unwrap(), "2");
    let mut fresh = connect(&proxy, Duration::from_secs(2)).unwrap();
    assert_eq!(one(&mut fresh, "select 3").unwrap(), "3");
}

#[test]
fn cut_closes_every_open_connection_and_new_ones_work() {
    let pg = server();
    let proxy = proxy_to(&pg);
    let mut clients: Vec<Client> = (0..3)
        .map(|_| connect(&proxy, Duration::from_secs(5)).unwrap())
        .collect();
    let backends = |pg: &PgServer| {
        pg.psql("select count(*) from pg_stat_activity where backend_type = 'client backend'")
            .unwrap()
            .trim()
            .parse::<i64>()
            .unwrap()
    };
    assert_eq!(backends(&pg), 3 + 1, "three through the proxy, plus psql");
    assert_eq!(proxy.cut(), 3);
    for c in &mut clients {
        let err = one(c, "select 1").expect_err("a cut connection answered");
        assert!(err.is_closed() || err.as_db_error().is_none(), "{err}");
    }
    // The server notices the FIN and ends the sessions.
    wait_until("backends gone", Duration::from_secs(5), || {
        backends(&pg) == 1
    });
    assert_eq!(proxy.open_connections(), 0);
    let mut fresh = connect(&proxy, Duration::from_secs(5)).unwrap();
    assert_eq!(one(&mut fresh, "select 7").unwrap(), "7");
}

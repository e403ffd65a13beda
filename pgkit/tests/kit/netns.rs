//! Network namespaces: a client inside reaches a server on the host, a partition drops its
//! packets both ways until healed, and everything goes away on drop. Root only.

use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use leadership_pgkit::netns::{require_root, NetNs};
use leadership_pgkit::pg::{tool_path, PgServer};
use postgres::{Client, NoTls};

fn psql_inside(ns: &NetNs, pg: &PgServer, sql: &str) -> Output {
    let port = pg.port().to_string();
    let host = ns.host_addr().to_string();
    ns.command(tool_path("psql").unwrap())
        .args(["-X", "-A", "-t", "-h", &host, "-p", &port])
        .args(["-U", "postgres", "-d", "postgres", "-c", sql])
        // libpq's shortest connect timeout is 2 s.
        .env("PGCONNECT_TIMEOUT", "2")
        .output()
        .unwrap()
}

/// A TCP connect from inside the namespace to the server, with a 1 s timeout.
fn connect_inside(ns: &NetNs, pg: &PgServer) -> std::io::Result<()> {
    let addr = SocketAddr::new(ns.host_addr().into(), pg.port());
    ns.spawn(move || TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map(drop))
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn a_client_inside_reaches_the_server_until_partitioned() {
    if !require_root("a_client_inside_reaches_the_server_until_partitioned") {
        return;
    }
    let ns = NetNs::create().unwrap();
    let pg = PgServer::start_with(&ns.server_options()).unwrap();
    assert!(pg.listen_addresses().contains(&ns.host_addr().into()));
    let out = psql_inside(&ns, &pg, "select inet_client_addr()");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        ns.ns_addr().to_string(),
        "the client comes from inside the namespace"
    );
    connect_inside(&ns, &pg).unwrap();

    ns.partition(true).unwrap();
    ns.partition(true).unwrap(); // idempotent
    assert!(ns.is_partitioned());
    let t = Instant::now();
    let err = connect_inside(&ns, &pg).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert!(t.elapsed() >= Duration::from_millis(900));
    let out = psql_inside(&ns, &pg, "select 1");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("timeout expired"), "{err}");
    // The host's own connections are untouched.
    assert_eq!(pg.psql("select 1").unwrap(), "1\n");

    ns.partition(false).unwrap();
    connect_inside(&ns, &pg).unwrap();
    let out = psql_inside(&ns, &pg, "select 1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_partition_hangs_an_open_session_that_resumes_when_healed() {
    if !require_root("a_partition_hangs_an_open_session_that_resumes_when_healed") {
        return;
    }
    let ns = NetNs::create().unwrap();
    let pg = PgServer::start_with(&ns.server_options()).unwrap();
    let conn = format!(
        "host={} port={} user=postgres dbname=postgres",
        ns.host_addr(),
        pg.port()
    );
    // Connected inside; its socket stays in the namespace when the client moves on.
    let mut client: Client = ns
        .spawn(move || Client::connect(&conn, NoTls).unwrap())
        .unwrap()
        .join()
        .unwrap();
    ns.partition(true).unwrap();
    let (tx, rx) = mpsc::channel();
    let query = std::thread::spawn(move || {
        let got: i32 = client.query_one("select 42", &[]).unwrap().get(0);
        tx.send(got).unwrap();
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(1500)).is_err(),
        "answered through the partition"
    );
    ns.partition(false).unwrap();
    // TCP retransmits the held query (backoff from 200 ms: within a few seconds).
    assert_eq!(rx.recv_timeout(Duration::from_secs(15)).unwrap(), 42);
    query.join().unwrap();
}

#[test]
fn dropping_the_namespace_removes_it_and_its_veth_pair() {
    if !require_root("dropping_the_namespace_removes_it_and_its_veth_pair") {
        return;
    }
    let ns = NetNs::create().unwrap();
    let (name, host_if) = (ns.name().to_string(), ns.host_interface().to_string());
    let exists = |args: &[&str]| {
        Command::new("ip")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    let listed = || {
        let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.split_whitespace().next() == Some(name.as_str()))
    };
    ns.partition(true).unwrap();
    assert!(listed() && exists(&["link", "show", &host_if]));
    assert!(ns.subnet().ends_with("/30"));
    drop(ns);
    assert!(!listed(), "namespace {name} still exists");
    assert!(
        !exists(&["link", "show", &host_if]),
        "{host_if} still exists"
    );
}

/// Runs only as the child of `require_root_skips_with_one_line_for_other_users`.
#[test]
#[ignore]
fn require_root_child_helper() {
    if std::env::var_os("LEADERSHIP_REQUIRE_ROOT_CHILD").is_none() {
        return;
    }
    println!("RESULT {}", require_root("the_child_test"));
}

#[test]
fn require_root_skips_with_one_line_for_other_users() {
    if unsafe { libc::geteuid() } != 0 {
        // Not root: the skip path is the one this very process takes.
        assert!(!require_root(
            "require_root_skips_with_one_line_for_other_users"
        ));
        return;
    }
    assert!(require_root(
        "require_root_skips_with_one_line_for_other_users"
    ));
    // As root, run the check again as an unprivileged user.
    let (uid, gid) = {
        let out = Command::new("id")
            .args(["-u", "postgres"])
            .output()
            .unwrap();
        let uid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let out = Command::new("id")
            .args(["-g", "postgres"])
            .output()
            .unwrap();
        let gid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        (uid, gid)
    };
    use std::os::unix::process::CommandExt;
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "netns::require_root_child_helper",
            "--nocapture",
            "--ignored",
        ])
        .env("LEADERSHIP_REQUIRE_ROOT_CHILD", "1")
        .current_dir("/")
        .uid(uid)
        .gid(gid)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("RESULT false"), "{stdout}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("skipping")).collect();
    assert_eq!(
        lines,
        [
            "skipping the_child_test: needs root (it creates network namespaces, veth pairs and \
          iptables rules); run the tests as root to include it"
        ]
    );
}

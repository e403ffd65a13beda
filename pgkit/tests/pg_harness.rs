use leadership_pgkit::netns::NetNs;
use leadership_pgkit::pg::{is_tmpfs, shared, PgError, PgServer, ServerOptions, Signal};
use leadership_pgkit::pgbouncer::{PgBouncer, PoolMode};
use leadership_pgkit::scratch::ScratchDir;
use leadership_pgkit::standby::{ReplicationMode, Standby};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn accepts(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// Process state letter from /proc/PID/stat ('R', 'S', 'T', 'Z', ...), None if gone.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn alive(pid: u32) -> bool {
    !matches!(proc_state(pid), None | Some('Z'))
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_gone(port: u16, pid: u32, data: &Path) {
    assert!(!alive(pid), "postmaster {pid} still running");
    assert!(!accepts(port), "port {port} still accepts connections");
    assert!(!data.exists(), "{} still exists", data.display());
    assert!(
        !data.parent().unwrap().exists(),
        "temp dir of {} still exists",
        data.display()
    );
}

#[test]
fn two_servers_in_parallel() {
    let threads: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(|| {
                let s = PgServer::start().unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(s.psql("select 1").unwrap(), "1\n");
                s
            })
        })
        .collect();
    let servers: Vec<PgServer> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_ne!(servers[0].port(), servers[1].port());
    let facts: Vec<(u16, u32, PathBuf)> = servers
        .iter()
        .map(|s| {
            (
                s.port(),
                s.server_pid().unwrap(),
                s.data_dir().to_path_buf(),
            )
        })
        .collect();
    for (port, pid, data) in &facts {
        assert!(accepts(*port) && alive(*pid) && data.is_dir());
    }
    drop(servers);
    for (port, pid, data) in &facts {
        assert_gone(*port, *pid, data);
    }
}

#[test]
fn config_and_connection_strings() {
    let s = PgServer::start().unwrap_or_else(|e| panic!("{e}"));
    let port = s.port();
    assert_eq!(s.host(), "127.0.0.1");
    assert_eq!(
        s.url(),
        format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable")
    );
    assert_eq!(
        s.conn_string(),
        format!("host=127.0.0.1 port={port} user=postgres dbname=postgres")
    );
    let show = |name: &str| s.psql(&format!("show {name}")).unwrap().trim().to_string();
    assert_eq!(
        show("fsync"),
        "on",
        "durable, so the check takes over at once"
    );
    assert_eq!(show("max_connections"), "300");
    assert_eq!(show("shared_preload_libraries"), "pg_stat_statements");
    assert_eq!(show("pg_stat_statements.track"), "all");
    assert_eq!(show("server_encoding"), "UTF8");
    assert_eq!(show("lc_collate"), "C");
    let sock_dir = s.data_dir().parent().unwrap().display().to_string();
    assert_eq!(show("unix_socket_directories"), sock_dir);
    assert_eq!(
        s.psql("select count(*) >= 0 from pg_stat_statements")
            .unwrap(),
        "t\n"
    );
    let err = s
        .psql("select * from no_such_table")
        .unwrap_err()
        .to_string();
    assert!(err.contains("no_such_table"), "{err}");
}

#[test]
fn drop_during_panic_cleans_up() {
    let mut facts = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let s = PgServer::start().unwrap_or_else(|e| panic!("{e}"));
        facts = Some((
            s.port(),
            s.server_pid().unwrap(),
            s.data_dir().to_path_buf(),
        ));
        panic!("test body failed");
    }));
    assert!(result.is_err());
    let (port, pid, data) = facts.expect("server had started");
    assert_gone(port, pid, &data);
}

#[test]
fn restart_keeps_port_and_data() {
    let mut s = PgServer::start().unwrap_or_else(|e| panic!("{e}"));
    let (port, pid) = (s.port(), s.server_pid().unwrap());
    s.psql("create table kept(x int); insert into kept values (42)")
        .unwrap();
    s.stop();
    s.stop(); // idempotent
    assert!(!accepts(port) && s.server_pid().is_none());
    s.restart().unwrap();
    assert_eq!(s.port(), port);
    assert_ne!(s.server_pid().unwrap(), pid);
    assert_eq!(s.psql("select x from kept").unwrap(), "42\n");
    s.restart().unwrap(); // restart of a running server
    assert_eq!(s.psql("select x from kept").unwrap(), "42\n");
}

#[test]
fn signal_backend_stops_and_continues() {
    let s = PgServer::start().unwrap_or_else(|e| panic!("{e}"));
    let mut child = s
        .psql_command()
        .arg("-c")
        .arg("select pg_sleep(30)")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let find = "select pid from pg_stat_activity where query like '%pg_sleep(30)%' and pid <> pg_backend_pid()";
    let mut backend = 0i32;
    wait_until(
        "backend of the sleeping psql",
        Duration::from_secs(10),
        || {
            backend = s.psql(find).unwrap().trim().parse().unwrap_or(0);
            backend > 0
        },
    );
    let pid = backend as u32;
    s.signal_backend(backend, Signal::Stop).unwrap();
    wait_until("state T", Duration::from_secs(5), || {
        proc_state(pid) == Some('T')
    });
    s.signal_backend(backend, Signal::Cont).unwrap();
    wait_until("state not T", Duration::from_secs(5), || {
        proc_state(pid) != Some('T')
    });
    // Refuses processes that are not backends of this server.
    assert!(s
        .signal_backend(std::process::id() as i32, Signal::Stop)
        .is_err());
    s.signal_backend(backend, Signal::Term).unwrap(); // terminates the session
    wait_until("psql exits", Duration::from_secs(10), || {
        child.try_wait().unwrap().is_some()
    });
    let _ = child.kill();
}

#[test]
fn shared_is_shared() {
    let a = shared();
    let b = shared();
    assert!(std::ptr::eq(a, b));
    assert_eq!(a.port(), b.port());
    assert_eq!(a.psql("select 1").unwrap(), "1\n");
}

/// Runs only as the child of `servers_pooler_and_namespace_die_with_a_sigkilled_process`.
#[test]
#[ignore]
fn sigkill_child_helper() {
    if std::env::var_os("LEADERSHIP_PG_SIGKILL_CHILD").is_none() {
        return;
    }
    let own = PgServer::start().unwrap_or_else(|e| panic!("{e}"));
    // A standby is a server built from a base backup: the same guarantees.
    let standby = Standby::start(&own, ReplicationMode::Async).unwrap_or_else(|e| panic!("{e}"));
    let bouncer = PgBouncer::start(&own, PoolMode::Transaction).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "LEADERSHIP_BOUNCER_READY {} {} {}",
        bouncer.port(),
        bouncer.pid().unwrap(),
        bouncer.dir().display()
    );
    // A network namespace (root only): its watchdog deletes it.
    let ns = (unsafe { libc::geteuid() } == 0).then(|| NetNs::create().unwrap());
    if let Some(ns) = &ns {
        println!(
            "LEADERSHIP_NETNS_READY {} {}",
            ns.name(),
            ns.host_interface()
        );
    }
    for s in [shared(), &own, &standby] {
        println!(
            "LEADERSHIP_PG_READY {} {} {}",
            s.port(),
            s.server_pid().unwrap(),
            s.data_dir().display()
        );
    }
    println!("LEADERSHIP_PG_DONE");
    std::thread::sleep(Duration::from_secs(120));
}

fn netns_listed(name: &str) -> bool {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[test]
fn servers_pooler_and_namespace_die_with_a_sigkilled_process() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sigkill_child_helper",
            "--nocapture",
            "--ignored",
        ])
        .env("LEADERSHIP_PG_SIGKILL_CHILD", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut servers = Vec::new();
    let mut bouncer = None;
    let mut netns = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line == "LEADERSHIP_PG_DONE" {
            break;
        }
        if let Some(rest) = line.strip_prefix("LEADERSHIP_NETNS_READY ") {
            let (name, host_if) = rest.split_once(' ').unwrap();
            netns = Some((name.to_string(), host_if.to_string()));
        }
        if let Some(rest) = line.strip_prefix("LEADERSHIP_BOUNCER_READY ") {
            let f: Vec<&str> = rest.split(' ').collect();
            bouncer = Some((
                f[0].parse::<u16>().unwrap(),
                f[1].parse::<u32>().unwrap(),
                PathBuf::from(f[2]),
            ));
        }
        if let Some(rest) = line.strip_prefix("LEADERSHIP_PG_READY ") {
            let f: Vec<&str> = rest.split(' ').collect();
            servers.push((
                f[0].parse::<u16>().unwrap(),
                f[1].parse::<u32>().unwrap(),
                PathBuf::from(f[2]),
            ));
        }
    }
    assert_eq!(servers.len(), 3, "child did not start its servers");
    for (port, pid, data) in &servers {
        assert!(accepts(*port) && alive(*pid) && data.is_dir());
    }
    let (b_port, b_pid, b_dir) = bouncer.expect("child did not start its pgbouncer");
    if let Some((name, host_if)) = &netns {
        assert!(netns_listed(name) && link_exists(host_if));
    }
    assert!(accepts(b_port) && alive(b_pid) && b_dir.is_dir());
    child.kill().unwrap(); // SIGKILL: no unwinding, no destructors
    child.wait().unwrap();
    wait_until("pgbouncer cleanup", Duration::from_secs(30), || {
        !alive(b_pid) && !b_dir.exists()
    });
    assert!(
        !accepts(b_port),
        "pgbouncer's port still accepts connections"
    );
    assert_eq!(
        netns.is_some(),
        unsafe { libc::geteuid() } == 0,
        "a namespace exactly when root"
    );
    if let Some((name, host_if)) = &netns {
        wait_until("netns cleanup", Duration::from_secs(30), || {
            !netns_listed(name) && !link_exists(host_if)
        });
    }
    for (port, pid, data) in &servers {
        wait_until("watchdog cleanup", Duration::from_secs(30), || {
            !alive(*pid) && !data.exists()
        });
        assert_gone(*port, *pid, data);
    }
}

#[test]
fn restart_retries_while_port_is_taken() {
    let mut s = PgServer::start().unwrap_or_else(|e| panic!("{e}"));
    s.stop();
    let squatter = std::net::TcpListener::bind(("127.0.0.1", s.port())).unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1000));
        drop(squatter);
    });
    s.restart().unwrap(); // fails to bind at first, retries until the port is free
    release.join().unwrap();
    assert_eq!(s.psql("select 1").unwrap(), "1\n");
    let log = std::fs::read_to_string(s.data_dir().join("server.log")).unwrap();
    assert!(
        log.contains("could not bind"),
        "expected a bind failure in the log:\n{log}"
    );
}

#[test]
fn a_durable_server_syncs_and_lives_on_disk() {
    let s = PgServer::start_with(&ServerOptions::new().durable(true)).unwrap();
    let show = |name: &str| s.psql(&format!("show {name}")).unwrap().trim().to_string();
    assert_eq!(show("fsync"), "on");
    assert_eq!(show("synchronous_commit"), "on");
    assert!(
        !is_tmpfs(s.data_dir()),
        "{} is on a tmpfs, where an fsync costs nothing",
        s.data_dir().display()
    );
    // The default says it is durable as well (the check relies on it), on a tmpfs where
    // that costs nothing when there is one.
    let fast = PgServer::start().unwrap();
    assert_eq!(fast.psql("show fsync").unwrap(), "on\n");
}

#[test]
fn options_set_config_hba_and_files_and_survive_a_restart() {
    let hba = "host all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 reject\n";
    let opts = ServerOptions::new()
        .config("work_mem = '7MB'")
        .hba(hba)
        .file("certs/secret.pem", "not really a key\n");
    let mut s = PgServer::start_with(&opts).unwrap();
    s.psql("create role other login").unwrap();
    for round in ["first start", "after restart"] {
        assert_eq!(s.psql("show work_mem").unwrap(), "7MB\n", "{round}");
        let err = s.psql_as("other", "select 1").unwrap_err().to_string();
        assert!(
            err.contains("pg_hba.conf rejects connection"),
            "{round}: {err}"
        );
        let file = s.data_dir().join("certs/secret.pem");
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "not really a key\n"
        );
        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{round}");
        // Owned by whoever runs the server: the data dir's owner.
        let owner = std::fs::metadata(s.data_dir()).unwrap().uid();
        assert_eq!(meta.uid(), owner, "{round}");
        s.restart().unwrap();
    }
    assert_eq!(
        s.psql("select setting from pg_settings where name = 'hba_file'")
            .unwrap()
            .trim(),
        s.data_dir().join("pg_hba.conf").display().to_string()
    );
    assert_eq!(
        s.socket_dir(),
        s.data_dir().parent().unwrap(),
        "socket dir is the temp dir"
    );
    assert!(s
        .socket_dir()
        .join(format!(".s.PGSQL.{}", s.port()))
        .exists());
}

#[test]
fn a_file_outside_the_data_dir_is_refused() {
    for name in ["../escape.pem", "/etc/escape.pem", ""] {
        match PgServer::start_with(&ServerOptions::new().file(name, "x")) {
            Err(PgError::Options(msg)) => assert!(msg.contains("relative path"), "{msg}"),
            Err(e) => panic!("{name:?}: wrong error {e}"),
            Ok(_) => panic!("{name:?} was accepted"),
        }
    }
}

#[test]
fn a_scratch_dir_is_private_to_the_server_user_and_removed_on_drop() {
    let dir = ScratchDir::new("scratch-test-").unwrap();
    let path = dir.path().to_path_buf();
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    // Servers run as its owner: the owner of a server's data dir.
    let pg = PgServer::start().unwrap();
    let server_uid = std::fs::metadata(pg.data_dir()).unwrap().uid();
    assert_eq!(meta.uid(), server_uid);
    std::fs::write(path.join("file"), "x").unwrap();
    drop(dir);
    assert!(!path.exists(), "{} left behind", path.display());
}

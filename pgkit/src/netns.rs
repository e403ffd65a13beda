//! A network namespace joined to the host by a veth pair, with a partition knob: for tests of
//! what a client sees when the network to its server drops every packet, with the kernel's
//! own TCP behaviour (retransmission, keepalive, `tcp_user_timeout`), which an in-process
//! [`Proxy`](crate::proxy::Proxy) cannot show. Root only: see [`require_root`].
//!
//! [`NetNs::create`] makes a namespace `lkt-<pid>-<n>` with a veth pair on a private /30
//! (10.231.x.y/30: [`NetNs::host_addr`] on the host end, [`NetNs::ns_addr`] inside; the loopback
//! inside is up too). A server that clients inside should reach must listen on the host
//! address and let the subnet in: start it with [`NetNs::server_options`] (the address must
//! exist first, so create the namespace before the server). Clients run inside either as
//! child processes ([`NetNs::command`]: `ip netns exec NAME program`) or as threads of the test
//! ([`NetNs::spawn`]: the thread joins the namespace with `setns`, so every socket it opens,
//! e.g. a `postgres::Client` it connects, belongs to the namespace, even once handed to
//! another thread).
//!
//! [`NetNs::partition`]`(true)` adds iptables `DROP` rules *inside the namespace* (`OUTPUT` to
//! the host address, `INPUT` from it), so the host's rules are untouched: packets both ways
//! vanish, open connections hang (TCP retransmits) and new connects time out; `false`
//! deletes the rules and held connections carry on. Dropping the `NetNs` deletes the namespace
//! (which destroys the veth pair and the rules with it); a [watchdog](crate::watchdog) does the
//! same if the test process dies.

use std::ffi::OsStr;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;

use crate::pg::{output_text, sanitized, PgError, ServerOptions};
use crate::watchdog::Watchdog;

/// Whether the test may use network namespaces: true as root. Otherwise prints one line saying
/// which test is skipped and why, and returns false; the test then returns early:
///
/// ```no_run
/// # use leadership_pgkit::netns::require_root;
/// if !require_root("partition_times_out_a_connect") {
///     return;
/// }
/// ```
///
/// This is the only way a test of the kit may skip.
pub fn require_root(test: &str) -> bool {
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    eprintln!(
        "skipping {test}: needs root (it creates network namespaces, veth pairs and iptables \
         rules); run the tests as root to include it"
    );
    false
}

/// A namespace with a veth pair to the host; see the module docs.
pub struct NetNs {
    name: String,
    host_if: String,
    host_addr: Ipv4Addr,
    ns_addr: Ipv4Addr,
    partitioned: AtomicBool,
    watchdog: Watchdog,
}

/// The first /30 of 10.231.0.0/16 we try, as an index of /30 blocks.
const BLOCKS: u32 = 1 << 14;

/// Runs a command, turning a failure into an error with its output.
fn run(mut cmd: Command, what: &str) -> Result<(), PgError> {
    let out = cmd.output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => PgError::Missing {
            what: format!("{:?} (for {what})", cmd.get_program()),
            fix: "install iproute2 and iptables (`apt-get install iproute2 iptables`)".into(),
        },
        _ => PgError::Io(e),
    })?;
    if !out.status.success() {
        return Err(PgError::Failed {
            what: what.to_string(),
            log: output_text(&out),
        });
    }
    Ok(())
}

fn ip(args: &[&str]) -> Command {
    let mut cmd = sanitized(Command::new("ip"));
    cmd.args(args);
    cmd
}

/// IPv4 addresses on this host's interfaces (root namespace).
fn host_addresses() -> Result<Vec<Ipv4Addr>, PgError> {
    let out = ip(&["-4", "-o", "addr", "show"]).output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3)?.split('/').next()?.parse().ok())
        .collect())
}

impl NetNs {
    /// Creates the namespace, the veth pair and the addresses; see the module docs. Needs root
    /// ([`require_root`]).
    pub fn create() -> Result<NetNs, PgError> {
        static N: AtomicU32 = AtomicU32::new(0);
        // One namespace at a time per process: the free-subnet check and its use go together.
        static CREATING: Mutex<()> = Mutex::new(());
        let _one = CREATING.lock().unwrap_or_else(|e| e.into_inner());
        let pid = std::process::id();
        let n = N.fetch_add(1, Ordering::Relaxed);
        let name = format!("lkt-{pid}-{n}");
        // Interface names have at most 15 bytes.
        let host_if = format!("lk{pid}x{n}h");
        let ns_if = format!("lk{pid}x{n}n");
        let used = host_addresses()?;
        // Start from a block derived from pid and counter so parallel processes rarely meet;
        // skip blocks whose addresses are already on the host.
        let start = pid.wrapping_mul(64).wrapping_add(n) % BLOCKS;
        let (host_addr, ns_addr) = (0..BLOCKS)
            .map(|i| {
                let base = u32::from(Ipv4Addr::new(10, 231, 0, 0)) + ((start + i) % BLOCKS) * 4;
                (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
            })
            .find(|(h, c)| !used.contains(h) && !used.contains(c))
            .ok_or_else(|| PgError::Failed {
                what: "finding a free /30 in 10.231.0.0/16".into(),
                log: String::new(),
            })?;
        // The watchdog first: whatever exists of the namespace when we die goes with it.
        let cleanup = r#"ip netns del "$1" 2>/dev/null; ip link del "$2" 2>/dev/null; true"#;
        let watchdog = Watchdog::spawn(
            None,
            cleanup,
            &[name.clone().into(), host_if.clone().into()],
        )?;
        let ns = NetNs {
            name,
            host_if,
            host_addr,
            ns_addr,
            partitioned: AtomicBool::new(false),
            watchdog,
        };
        let (h, c) = (format!("{host_addr}/30"), format!("{ns_addr}/30"));
        let name = ns.name.as_str();
        let steps: [(&[&str], &str); 7] = [
            (&["netns", "add", name], "ip netns add"),
            (
                &[
                    "link",
                    "add",
                    &ns.host_if,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &ns_if,
                    "netns",
                    name,
                ],
                "ip link add (veth pair)",
            ),
            (
                &["addr", "add", &h, "dev", &ns.host_if],
                "ip addr add (host end)",
            ),
            (
                &["link", "set", &ns.host_if, "up"],
                "ip link set up (host end)",
            ),
            (
                &["-n", name, "addr", "add", &c, "dev", &ns_if],
                "ip addr add (namespace end)",
            ),
            (
                &["-n", name, "link", "set", &ns_if, "up"],
                "ip link set up (namespace end)",
            ),
            (
                &["-n", name, "link", "set", "lo", "up"],
                "ip link set lo up (namespace)",
            ),
        ];
        for (args, what) in steps {
            run(ip(args), what)?;
        }
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host end of the veth pair: where a server listens for clients inside.
    pub fn host_addr(&self) -> Ipv4Addr {
        self.host_addr
    }

    /// The namespace end: the source address of clients inside.
    pub fn ns_addr(&self) -> Ipv4Addr {
        self.ns_addr
    }

    /// The /30 of both ends, e.g. `10.231.4.0/30`.
    pub fn subnet(&self) -> String {
        let base = u32::from(self.host_addr) - 1;
        format!("{}/30", Ipv4Addr::from(base))
    }

    /// [`ServerOptions`] for a server clients inside can reach: listening on the host address
    /// too, with `host all all <subnet> trust` in `pg_hba.conf`.
    pub fn server_options(&self) -> ServerOptions {
        self.server_options_from(ServerOptions::new())
    }

    /// `options` plus what [`server_options`](NetNs::server_options) adds.
    pub fn server_options_from(&self, options: ServerOptions) -> ServerOptions {
        options
            .listen_on(IpAddr::V4(self.host_addr))
            .hba_line(format!("host all all {} trust", self.subnet()))
    }

    /// `ip netns exec NAME program`: add arguments and run it; it runs inside the namespace
    /// (as the current user, without the caller's PG* variables).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = sanitized(Command::new("ip"));
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `f` on a new thread inside the namespace (`setns`); sockets it opens belong to the
    /// namespace for their whole life.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<JoinHandle<T>, PgError> {
        let path = format!("/run/netns/{}", self.name);
        let ns = File::open(&path).map_err(|e| PgError::Failed {
            what: format!("opening {path}"),
            log: e.to_string(),
        })?;
        Ok(std::thread::spawn(move || {
            // Only this thread moves; the rest of the process stays in the host's namespace.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                panic!("setns into {path}: {}", std::io::Error::last_os_error());
            }
            drop(ns);
            f()
        }))
    }

    /// Drops (`true`) or lets through again (`false`) every packet between the namespace and
    /// the host address, both ways; see the module docs. Idempotent.
    pub fn partition(&self, on: bool) -> Result<(), PgError> {
        if self.partitioned.load(Ordering::SeqCst) == on {
            return Ok(());
        }
        let host = self.host_addr.to_string();
        let op = if on { "-I" } else { "-D" };
        for (chain, dir) in [("OUTPUT", "-d"), ("INPUT", "-s")] {
            let mut cmd = self.command("iptables");
            cmd.args(["-w", "5", op, chain, dir, &host, "-j", "DROP"]);
            run(
                cmd,
                &format!("iptables {op} {chain} in namespace {}", self.name),
            )?;
        }
        self.partitioned.store(on, Ordering::SeqCst);
        Ok(())
    }

    pub fn is_partitioned(&self) -> bool {
        self.partitioned.load(Ordering::SeqCst)
    }

    /// The host end's interface name.
    pub fn host_interface(&self) -> &str {
        &self.host_if
    }
}

impl Drop for NetNs {
    /// The watchdog deletes the namespace (and with it the veth pair and the rules).
    fn drop(&mut self) {
        self.watchdog.fire();
    }
}

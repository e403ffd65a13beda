//! An in-process TCP proxy to a target address, with knobs a test turns while it runs: latency
//! per direction, a black hole, a cut of every open connection, and a count of the client's
//! writes.
//!
//! [`Proxy::start`] listens on a free port of 127.0.0.1. Each accepted client gets its own
//! connection to the target; each direction is a reader thread and a writer thread joined by a
//! FIFO queue, so data is delayed but never reordered or lost, and a change of latency applies
//! to data read after it (data already queued keeps its delivery time; a later chunk never
//! overtakes an earlier one).
//!
//! **Black hole: what it models and how.** [`Proxy::black_hole`]`(true)` models a network that
//! drops every packet, as a partition or a dead host does, for the proxy's traffic:
//! - *Open connections hang*: nothing is forwarded either way and nothing more is read from the
//!   sockets, so the senders' kernel buffers fill as they would without ACKs. Nothing is lost:
//!   after `black_hole(false)` the held data flows on, as TCP retransmission delivers it after a
//!   healed partition. Unlike a real partition, each side's kernel still ACKs what it receives,
//!   so TCP keepalive or `tcp_user_timeout` will **not** notice the hang; only an application
//!   timeout will (use [`NetNs`](crate::netns::NetNs) for the kernel's view).
//! - *New connects time out* rather than being refused: the proxy stops accepting, shrinks its
//!   listen backlog to the minimum and fills the accept queue with connections of its own, so
//!   the kernel drops the SYNs of new clients (as for an unreachable host) and their `connect`
//!   runs into its timeout. Closing the listener instead would answer with a RST ("connection
//!   refused" at once), which models a host that is up with the port closed, not lost packets.
//!   A client that keeps retrying its SYN gets through after `black_hole(false)`.
//!
//! [`Proxy::cut`] closes every open connection at once (both sides get a FIN, as when a middlebox
//! or the server's host drops the connection cleanly); the listener keeps accepting. Dropping the
//! proxy stops accepting and cuts everything.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long a wait for a knob to change sleeps between looks.
const TICK: Duration = Duration::from_millis(2);
/// How long the connect of a filler may take before the accept queue counts as full.
const FILLER_TIMEOUT: Duration = Duration::from_millis(100);

/// A running proxy; see the module docs.
pub struct Proxy {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    target: SocketAddr,
    listener: TcpListener,
    /// Microseconds added to data going client → target and target → client.
    latency_up: AtomicU64,
    latency_down: AtomicU64,
    black_hole: AtomicBool,
    stop: AtomicBool,
    writes: AtomicU64,
    accepted: AtomicU64,
    next_id: AtomicU64,
    /// Held by the acceptor around each poll and accept, so a knob changing the accept queue
    /// knows the acceptor is not taking a connection meanwhile.
    accepting: Mutex<()>,
    conns: Mutex<Vec<Conn>>,
    /// Our own connections filling the accept queue during a black hole, by local port.
    fillers: Mutex<(Vec<TcpStream>, HashSet<u16>)>,
}

/// An open connection: the sockets to shut down on a cut.
struct Conn {
    id: u64,
    client: TcpStream,
    server: TcpStream,
    cut: Arc<AtomicBool>,
}

impl Proxy {
    /// Starts a proxy to `target` (e.g. `([127, 0, 0, 1], server.port())`) on a free port of
    /// 127.0.0.1. No latency, no black hole.
    pub fn start(target: impl Into<SocketAddr>) -> io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            target: target.into(),
            listener,
            latency_up: AtomicU64::new(0),
            latency_down: AtomicU64::new(0),
            black_hole: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            writes: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
            accepting: Mutex::new(()),
            conns: Mutex::new(Vec::new()),
            fillers: Mutex::new((Vec::new(), HashSet::new())),
        });
        let s = shared.clone();
        let acceptor = thread::Builder::new()
            .name(format!("proxy-{port}"))
            .spawn(move || accept_loop(&s))?;
        Ok(Proxy {
            port,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// The proxy's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn target(&self) -> SocketAddr {
        self.shared.target
    }

    /// Adds `each_way` to both directions: `set_latency(150 ms)` makes a 300 ms round trip.
    pub fn set_latency(&self, each_way: Duration) {
        self.set_latency_each(each_way, each_way);
    }

    /// Adds `to_target` to data from the client and `to_client` to data from the target.
    pub fn set_latency_each(&self, to_target: Duration, to_client: Duration) {
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.shared
            .latency_up
            .store(us(to_target), Ordering::SeqCst);
        self.shared
            .latency_down
            .store(us(to_client), Ordering::SeqCst);
    }

    /// Drops (`true`) or heals (`false`) the proxy's traffic; see the module docs. Returns once
    /// the change holds: with `true`, a new connect from now on times out; with `false`, held
    /// data flows on and queued clients are served. Idempotent.
    pub fn black_hole(&self, on: bool) -> io::Result<()> {
        let s = &self.shared;
        if on {
            s.black_hole.store(true, Ordering::SeqCst);
            let _acceptor_parked = s.accepting.lock().unwrap();
            fill_accept_queue(s)
        } else {
            let _acceptor_parked = s.accepting.lock().unwrap();
            set_backlog(&s.listener, libc::SOMAXCONN)?;
            // Serve what queued during the hole, except our fillers, then let the acceptor go.
            let mut fillers = s.fillers.lock().unwrap();
            while let Ok((stream, peer)) = s.listener.accept() {
                if !fillers.1.contains(&peer.port()) {
                    serve(s, stream);
                }
            }
            *fillers = (Vec::new(), HashSet::new());
            s.black_hole.store(false, Ordering::SeqCst);
            Ok(())
        }
    }

    pub fn is_black_hole(&self) -> bool {
        self.shared.black_hole.load(Ordering::SeqCst)
    }

    /// Closes every open connection at once (FIN to both sides); returns how many it closed.
    /// New connections are accepted as before.
    pub fn cut(&self) -> usize {
        let conns = std::mem::take(&mut *self.shared.conns.lock().unwrap());
        for c in &conns {
            c.cut.store(true, Ordering::SeqCst);
            let _ = c.client.shutdown(Shutdown::Both);
            let _ = c.server.shutdown(Shutdown::Both);
        }
        conns.len()
    }

    /// How many reads the proxy made from its clients since it started: with a client that
    /// writes each batch of messages at once (as tokio-postgres and libpq do) and waits for the
    /// answer, one per round trip. Reads made during a black hole count when they happen.
    pub fn client_writes(&self) -> u64 {
        self.shared.writes.load(Ordering::SeqCst)
    }

    /// Connections open now (accepted, target connected, not yet closed by either side or cut).
    pub fn open_connections(&self) -> usize {
        self.shared.conns.lock().unwrap().len()
    }

    /// Connections accepted since the start.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        self.cut();
        *self.shared.fillers.lock().unwrap() = (Vec::new(), HashSet::new());
    }
}

fn set_backlog(listener: &TcpListener, backlog: i32) -> io::Result<()> {
    // listen() on a listening socket only changes its backlog (Linux).
    match unsafe { libc::listen(listener.as_raw_fd(), backlog) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// With the acceptor parked: shrink the backlog to 0 (one queued connection makes the queue
/// full on Linux) and connect to ourselves until a connect times out, i.e. the kernel now drops
/// SYNs. Connections of clients that were already queued stay queued (they hang).
fn fill_accept_queue(s: &Shared) -> io::Result<()> {
    set_backlog(&s.listener, 0)?;
    let addr = s.listener.local_addr()?;
    let mut fillers = s.fillers.lock().unwrap();
    for _ in 0..64 {
        match TcpStream::connect_timeout(&addr, FILLER_TIMEOUT) {
            Ok(c) => {
                fillers.1.insert(c.local_addr()?.port());
                fillers.0.push(c);
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(
        "black hole: the accept queue did not fill after 64 connections",
    ))
}

fn accept_loop(s: &Arc<Shared>) {
    while !s.stop.load(Ordering::SeqCst) {
        if s.black_hole.load(Ordering::SeqCst) {
            thread::sleep(TICK);
            continue;
        }
        let _guard = s.accepting.lock().unwrap();
        if s.black_hole.load(Ordering::SeqCst) {
            continue;
        }
        let mut pfd = libc::pollfd {
            fd: s.listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // A short poll, so stop and black-hole requests are seen soon.
        if unsafe { libc::poll(&mut pfd, 1, 10) } <= 0 {
            continue;
        }
        if let Ok((stream, _)) = s.listener.accept() {
            serve(s, stream);
        }
    }
}

/// Connects `client` to the target and starts its four threads; a client whose target connect
/// fails is closed.
fn serve(s: &Arc<Shared>, client: TcpStream) {
    s.accepted.fetch_add(1, Ordering::SeqCst);
    let Ok(server) = TcpStream::connect_timeout(&s.target, Duration::from_secs(5)) else {
        return;
    };
    // The accepted socket inherits O_NONBLOCK from the listener.
    let setup = |c: &TcpStream| c.set_nonblocking(false).and_then(|_| c.set_nodelay(true));
    if setup(&client).is_err() || setup(&server).is_err() {
        return;
    }
    let clones = (|| {
        Some((
            client.try_clone().ok()?,
            client.try_clone().ok()?,
            server.try_clone().ok()?,
            server.try_clone().ok()?,
        ))
    })();
    let Some((c_read, c_write, s_read, s_write)) = clones else {
        return;
    };
    let id = s.next_id.fetch_add(1, Ordering::SeqCst);
    let cut = Arc::new(AtomicBool::new(false));
    s.conns.lock().unwrap().push(Conn {
        id,
        client,
        server,
        cut: cut.clone(),
    });
    // Two directions; the connection leaves the registry when both have ended.
    let live = Arc::new(AtomicU64::new(2));
    for (from, to, up) in [(c_read, s_write, true), (s_read, c_write, false)] {
        let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
        let (cut_r, cut_w) = (cut.clone(), cut.clone());
        let live = live.clone();
        let from_w = from.try_clone().ok();
        let (s_r, s) = (s.clone(), s.clone());
        thread::spawn(move || read_side(&s_r, from, tx, up, &cut_r));
        thread::spawn(move || {
            write_side(&s, to, from_w, rx, &cut_w);
            if live.fetch_sub(1, Ordering::SeqCst) == 1 {
                s.conns.lock().unwrap().retain(|c| c.id != id);
            }
        });
    }
}

fn held(s: &Shared, cut: &AtomicBool) -> bool {
    s.black_hole.load(Ordering::SeqCst) && !cut.load(Ordering::SeqCst)
}

fn read_side(
    s: &Shared,
    mut from: TcpStream,
    tx: mpsc::Sender<(Instant, Vec<u8>)>,
    up: bool,
    cut: &AtomicBool,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        while held(s, cut) {
            thread::sleep(TICK);
        }
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let latency = if up {
            s.writes.fetch_add(1, Ordering::SeqCst);
            &s.latency_up
        } else {
            &s.latency_down
        };
        let at = Instant::now() + Duration::from_micros(latency.load(Ordering::SeqCst));
        if tx.send((at, buf[..n].to_vec())).is_err() {
            break;
        }
    }
}

fn write_side(
    s: &Shared,
    mut to: TcpStream,
    from: Option<TcpStream>,
    rx: mpsc::Receiver<(Instant, Vec<u8>)>,
    cut: &AtomicBool,
) {
    for (at, data) in rx {
        let now = Instant::now();
        if at > now {
            thread::sleep(at - now);
        }
        while held(s, cut) {
            thread::sleep(TICK);
        }
        if cut.load(Ordering::SeqCst) || to.write_all(&data).is_err() {
            break;
        }
    }
    // Pass the sender's FIN on; if the receiver is gone, stop reading from the sender too.
    let _ = to.shutdown(Shutdown::Write);
    if let Some(from) = from {
        let _ = from.shutdown(Shutdown::Read);
    }
}

//! The connection thread: it owns one `postgres::Client`, runs the statements the driver sends
//! it, and watches for notifications while idle. The driver never waits on it for longer than
//! the statement timeout: a worker that hangs is abandoned and a fresh one started.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use leadership_core::sql::Statements;
use leadership_tokio::pg::CheckRow;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{CancelToken, Client, Statement};

use crate::driver::Msg;
use crate::error::Error;
use crate::schema;

/// How long an idle worker of a follower blocks on the socket waiting for a notification before
/// it looks for a request. A notification wakes it at once, so a release reaches the core
/// within about a round trip; a follower's scheduled check waits at most this long to be sent,
/// a small part of the statement timeout, which counts from when the driver queued it.
const NOTIFY_WAIT: Duration = Duration::from_millis(10);

/// How long an idle worker of a leader waits for a request before it reads the socket (without
/// waiting): a leader ignores notifications, and its renewals and release go out at once.
const LEADER_IDLE: Duration = Duration::from_millis(20);

/// After a notification, how long the worker waits for the check the core asks for at once,
/// rather than going back to the socket and leaving it queued for up to [`NOTIFY_WAIT`].
const CHECK_AFTER_NOTIFY: Duration = Duration::from_millis(50);

/// Opens a connection with the caller's TLS setting (kept generic only in `start`).
pub(crate) type ConnectFn =
    Box<dyn Fn(&postgres::Config) -> Result<Client, postgres::Error> + Send + Sync>;

/// Everything needed to open a connection; shared by the driver and its workers.
pub(crate) struct Setup {
    pub(crate) pg: postgres::Config,
    pub(crate) connect: ConnectFn,
    pub(crate) cancel: Box<dyn Fn(&CancelToken) + Send + Sync>,
    pub(crate) statements: Statements,
    pub(crate) name: String,
    pub(crate) process: String,
    pub(crate) interval_micros: i64,
    /// Set by the driver while this process leads or is about to release: the worker then
    /// waits on its requests rather than on the socket, so a renew or release is never held
    /// up by a wait for notifications that the core would ignore.
    pub(crate) prefer_requests: AtomicBool,
}

/// A statement for the worker, numbered so a late reply is never taken for a newer one's.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Request {
    Check { seq: u64, renew: Option<i64> },
    Release { seq: u64, version: i64 },
}

/// A statement's result.
#[derive(Debug)]
pub(crate) enum Reply {
    Checked(CheckRow),
    Released(bool),
    Failed(String),
}

/// What a worker tells the driver.
pub(crate) enum Event {
    /// A fresh connection is ready; its cancel token lets the driver cancel a hung statement.
    Connected(CancelToken),
    Reply {
        seq: u64,
        reply: Reply,
    },
    /// Our flag was released by its holder.
    Notified,
    /// The connection is gone (or never came up); the worker has exited.
    Gone(String),
}

/// An open connection with the statements prepared and `LISTEN` issued.
pub(crate) struct Session {
    client: Client,
    check: Statement,
    release: Statement,
}

impl Session {
    /// Connects, makes sure the table is fit, prepares CHECK and RELEASE, listens.
    pub(crate) fn open(setup: &Setup) -> Result<Session, Error> {
        let mut client = (setup.connect)(&setup.pg).map_err(Error::connect)?;
        schema::ensure_table(&mut client, &setup.statements)?;
        let db = |what| move |source| Error::Database { what, source };
        let check = client
            .prepare(&setup.statements.check)
            .map_err(db("preparing the check"))?;
        let release = client
            .prepare(&setup.statements.release)
            .map_err(db("preparing the release"))?;
        client
            .batch_execute(&setup.statements.listen)
            .map_err(db("LISTEN"))?;
        Ok(Session {
            client,
            check,
            release,
        })
    }

    pub(crate) fn cancel_token(&self) -> CancelToken {
        self.client.cancel_token()
    }

    fn run(&mut self, setup: &Setup, request: Request) -> Reply {
        let (name, process) = (&setup.name, &setup.process);
        let result = match request {
            Request::Check { renew, .. } => self
                .client
                .query_one(
                    &self.check,
                    &[name, process, &renew, &setup.interval_micros],
                )
                .map_err(|e| e.to_string())
                .and_then(|row| CheckRow::decode(&row).map_err(|e| e.to_string()))
                .map(Reply::Checked),
            Request::Release { version, .. } => self
                .client
                .query(
                    &self.release,
                    &[name, process, &version, &setup.statements.channel],
                )
                .map(|rows| Reply::Released(!rows.is_empty()))
                .map_err(|e| e.to_string()),
        };
        result.unwrap_or_else(Reply::Failed)
    }

    /// Whether a release of our flag was announced: blocks until a notification arrives or
    /// `wait` passes, then takes whatever else has already arrived without waiting again.
    fn notified(&mut self, setup: &Setup, wait: Duration) -> Result<bool, postgres::Error> {
        let ours = |n: &postgres::Notification| {
            n.channel() == setup.statements.channel && n.payload() == setup.name
        };
        let mut notifications = self.client.notifications();
        let Some(first) = notifications.timeout_iter(wait).next()? else {
            return Ok(false);
        };
        let mut hit = ours(&first);
        let mut rest = notifications.iter();
        while let Some(n) = rest.next()? {
            hit |= ours(&n);
        }
        Ok(hit)
    }
}

/// Starts a worker numbered `gen`, on `session` or on a connection it opens itself. It exits
/// when the driver drops the returned sender or its connection fails.
pub(crate) fn spawn(
    gen: u64,
    setup: Arc<Setup>,
    session: Option<Session>,
    events: Sender<Msg>,
) -> std::io::Result<Sender<Request>> {
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name(format!("leadership-pg-{gen}"))
        .spawn(move || run(gen, &setup, session, &rx, &events))?;
    Ok(tx)
}

fn run(
    gen: u64,
    setup: &Setup,
    session: Option<Session>,
    rx: &Receiver<Request>,
    events: &Sender<Msg>,
) {
    let send = |event| events.send(Msg::Worker { gen, event }).is_ok();
    let mut session = match session.map_or_else(|| Session::open(setup), Ok) {
        Ok(s) => s,
        Err(e) => {
            send(Event::Gone(e.to_string()));
            return;
        }
    };
    if !send(Event::Connected(session.cancel_token())) {
        return;
    }
    // Requests first, without waiting; then the socket, where a notification wakes the
    // worker at once.
    let mut wait_for_request = Duration::ZERO;
    loop {
        let leading = setup.prefer_requests.load(Ordering::Relaxed);
        if leading {
            wait_for_request = wait_for_request.max(LEADER_IDLE);
        }
        let request = match rx.recv_timeout(wait_for_request) {
            Ok(request) => Some(request),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return, // abandoned or stopped
        };
        wait_for_request = Duration::ZERO;
        if let Some(request) = request {
            let seq = match request {
                Request::Check { seq, .. } | Request::Release { seq, .. } => seq,
            };
            let reply = session.run(setup, request);
            if !send(Event::Reply { seq, reply }) {
                return;
            }
            continue;
        }
        let listen = if leading { Duration::ZERO } else { NOTIFY_WAIT };
        match session.notified(setup, listen) {
            Ok(true) => {
                if !send(Event::Notified) {
                    return;
                }
                wait_for_request = CHECK_AFTER_NOTIFY;
            }
            Ok(false) => {}
            Err(e) => {
                send(Event::Gone(e.to_string()));
                return;
            }
        }
        if session.client.is_closed() {
            send(Event::Gone("the connection was closed".into()));
            return;
        }
    }
}

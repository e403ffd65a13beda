//! The loop: wait for the core's next wake-up, the pending statement's reply, a notification,
//! the leader-only work stopping, or the user's close; feed it to the core; carry out the
//! commands. Every decision is the core's.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use leadership_core::{Command, Flag as Core, Input, Precheck};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::batch::Member;
use crate::connection::{CheckParams, Conn};
use crate::done::{after_failure, connection, CheckCommand, Done, Reply, Why};
use crate::link::Link;
use crate::parts::{Parts, PrecheckFn};
use crate::pg::CheckRow;
use crate::recorder::{Metrics, Statement};
use crate::signals::Signals;
use crate::state::Holder;

/// The one statement or precheck in flight (the core never asks for two at once).
type Pending = Pin<Box<dyn Future<Output = Done> + Send>>;

/// A user's request to the running driver (besides close, which is a token).
pub(crate) enum Request {
    /// [`Flag::resign`](crate::Flag::resign): answered once the hand-over is done.
    Resign {
        hold_off: Option<Duration>,
        done: oneshot::Sender<()>,
    },
}

/// How the driver task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Closed: the row was released, or was not ours.
    Closed,
    /// Closed, but the release failed: the lease is left to expire.
    ReleaseFailed,
    /// The task is gone without an answer (it panicked).
    Gone,
}

pub(crate) struct Driver {
    core: Core,
    signals: Arc<Signals>,
    /// The holder the last check saw, published once the commands of that check are carried
    /// out (so nobody sees the holder before the raise it brought).
    holder: Option<Holder>,
    /// A wake-up for each notified release of this flag (coalesced: one pending at most);
    /// `None` once its route is gone, after which the flag only polls.
    notifications: Option<mpsc::Receiver<()>>,
    /// The core asked for the leader-only work to stop ([`Command::StopWork`]) and has not
    /// been told it has.
    stopping: bool,
    link: Arc<Link>,
    metrics: Metrics,
    precheck: Option<PrecheckFn>,
    name: Arc<str>,
    process: Arc<str>,
    lease_micros: i64,
    timeout: Duration,
    release_failed: bool,
    /// The connection the core last heard of ([`Input::Connected`]): statements run only on it.
    known_conn: Option<u64>,
    /// Resign calls waiting for the hand-over to finish.
    resigned: Vec<oneshot::Sender<()>>,
    /// Whether a balanced set wants this flag ([`Input::Wanted`]); `None` for an ordinary
    /// flag, which always does.
    wanted: Option<watch::Receiver<bool>>,
    /// A balanced set's wake-up for a read of the group, rung when this shard is released
    /// while dormant; `None` for an ordinary flag.
    rescan: Option<Arc<Notify>>,
    /// This flag's place in its set's batch; `None` for a flag of its own.
    batch: Option<Member>,
    /// The batch asked this flag to renew early, and it has not answered yet.
    pulled: bool,
}

impl Driver {
    pub(crate) fn new(parts: Parts, signals: Arc<Signals>) -> Driver {
        let Parts {
            config,
            seed,
            link,
            notifications,
            metrics,
            precheck,
            shard,
            batch,
        } = parts;
        let (wanted, rescan) = shard.map_or((None, None), |s| (Some(s.wanted), Some(s.rescan)));
        metrics.state(false);
        let now = signals.cell.now();
        // A shard of a balanced set starts dormant unless wanted: it takes nothing the balance
        // has not designated to it.
        let core = match &wanted {
            Some(w) if !*w.borrow() => Core::new_unwanted(config.clone(), seed, now),
            _ => Core::new(config.clone(), seed, now),
        };
        Driver {
            name: config.name().into(),
            process: config.process().into(),
            lease_micros: config.interval_micros(),
            timeout: config.timeout(),
            core,
            signals,
            holder: None,
            notifications,
            stopping: false,
            link,
            metrics,
            precheck,
            release_failed: false,
            known_conn: None,
            resigned: Vec::new(),
            wanted,
            rescan,
            batch,
            pulled: false,
        }
    }

    /// Runs until the core says `Closed`, after `close` is cancelled (by the user's close,
    /// the last handle's drop, or the user's shutdown token).
    pub(crate) async fn run(
        mut self,
        close: CancellationToken,
        mut requests: mpsc::UnboundedReceiver<Request>,
    ) -> Outcome {
        let mut asked = false;
        let mut pending: Option<Pending> = None;
        info!(name = %self.name, process = %self.process, table = %self.link.connector().statements().regclass, "competing for the flag");
        loop {
            if let Some(next) = self.drain() {
                pending = Some(next);
            }
            // After the raise a reply caused (a reader woken by the holder's change, as
            // `try_lead` is, finds the guard), and before a lowering (`drain` publishes it
            // first: a reader woken by `lost()` finds the holder that took over).
            self.publish_holder();
            if let Some(batch) = &self.batch {
                if std::mem::take(&mut self.pulled) {
                    batch.decline();
                }
                let early = self.core.poll_early_check();
                batch.set_early(early.and_then(|t| self.signals.cell.at(t)));
            }
            if !self.core.is_resigning() {
                for done in self.resigned.drain(..) {
                    let _ = done.send(());
                }
            }
            if self.core.is_closed() {
                return if self.release_failed {
                    Outcome::ReleaseFailed
                } else {
                    Outcome::Closed
                };
            }
            let wake = self
                .core
                .poll_timeout()
                .and_then(|t| self.signals.cell.at(t))
                .map(tokio::time::Instant::from_std);
            tokio::select! {
                biased;
                () = close.cancelled(), if !asked => {
                    asked = true;
                    self.input(Input::Close);
                }
                done = async { pending.as_mut().expect("guarded").await }, if pending.is_some() => {
                    pending = None;
                    self.reply(done);
                }
                () = self.signals.guards_dropped(), if self.stopping => {
                    self.stopping = false;
                    debug!(name = %self.name, "leader-only work stopped");
                    self.input(Input::WorkStopped);
                }
                Some(request) = requests.recv() => match request {
                    Request::Resign { hold_off, done } => {
                        info!(name = %self.name, process = %self.process, ?hold_off, "resigning");
                        self.input(Input::Resign { hold_off });
                        self.resigned.push(done);
                    }
                },
                note = recv(&mut self.notifications), if self.notifications.is_some() => {
                    match note {
                        Some(()) => {
                            debug!(name = %self.name, "notified of a release; checking");
                            // A dormant shard takes nothing on a release, but the balance may
                            // now give it to this process (a member left and released its
                            // shards): the group is read again at once, not at its next scan.
                            if let Some(rescan) = &self.rescan {
                                if !self.core.is_wanted() {
                                    rescan.notify_one();
                                }
                            }
                            self.input(Input::Notified);
                        }
                        // Cannot happen while the connector lives; stop listening if it does.
                        None => self.notifications = None,
                    }
                }
                changed = changed(&mut self.wanted), if self.wanted.is_some() => {
                    match changed {
                        Some(wanted) => {
                            debug!(name = %self.name, wanted, "balance changed");
                            self.input(Input::Wanted(wanted));
                        }
                        None => self.wanted = None,
                    }
                }
                () = pulled(&self.batch), if self.batch.is_some() => {
                    self.pulled = true;
                    self.input(Input::Batching);
                }
                () = sleep_until(wake), if wake.is_some() => {
                    self.core.handle_timeout(self.signals.cell.now());
                }
            }
        }
    }

    /// Publishes the holder the last reply showed, once.
    fn publish_holder(&mut self) {
        if let Some(holder) = self.holder.take() {
            self.signals.set_holder(holder);
        }
    }

    fn input(&mut self, input: Input<'_>) {
        if let Err(e) = self.core.handle_input(self.signals.cell.now(), input) {
            // A bug of this driver, not of the database: say so loudly and carry on (the
            // core's state is unchanged).
            error!(error = %e, "leadership driver broke the core's contract");
        }
    }

    /// Carries out every queued command; returns the statement or precheck to await, if any.
    fn drain(&mut self) -> Option<Pending> {
        let mut next = None;
        while let Some(command) = self.core.poll_command() {
            self.metrics.command(&command);
            match command {
                Command::Check {
                    renew,
                    floor,
                    may_take,
                    may_insert,
                    continues,
                    expect,
                } => {
                    let check = CheckCommand {
                        renew,
                        floor,
                        may_take,
                        may_insert,
                        continues,
                        expect,
                    };
                    next = Some(self.check(check))
                }
                Command::Release { version } => next = Some(self.release(version)),
                Command::RunPrecheck => next = Some(self.run_precheck()),
                Command::Raise(lease) => {
                    self.signals.raised(lease);
                    info!(name = %self.name, process = %self.process, token = lease.token, won_by = ?lease.won_by, "raised: this process leads");
                }
                Command::Renewed(lease) => {
                    self.signals.raised(lease);
                    debug!(name = %self.name, version = lease.version, "renewed");
                }
                Command::AtRisk(lease) => {
                    // Every guard's `at_risk()` fires now (they watch the clock too).
                    self.signals.at_risk();
                    warn!(name = %self.name, process = %self.process, token = lease.token, "lease at risk: no renew has won; leader-only work must stop before the deadline");
                }
                Command::Lower(reason) => {
                    self.publish_holder();
                    // Every guard's `lost()` fires now.
                    self.signals.lowered();
                    info!(name = %self.name, process = %self.process, ?reason, "lowered: this process no longer leads");
                }
                // The guards were told by the `Lower` before it; the loop waits for them to be
                // dropped (the core bounds the wait by the lease's deadline).
                Command::StopWork => self.stopping = true,
                Command::Anomaly(anomaly) => {
                    warn!(name = %self.name, ?anomaly, "odd row in the flags table");
                }
                Command::Closed => {
                    self.stopping = false;
                    info!(name = %self.name, process = %self.process, "closed");
                }
            }
        }
        next
    }

    fn check(&mut self, c: CheckCommand) -> Pending {
        let (name, process, lease_micros) =
            (self.name.clone(), self.process.clone(), self.lease_micros);
        if let Some(batch) = &self.batch {
            // The answer to a pull, if there was one.
            self.pulled = false;
            let done = batch.submit(
                name,
                process,
                lease_micros,
                c,
                self.known_conn,
                self.timeout,
            );
            return Box::pin(async move {
                done.await.unwrap_or_else(|_| Done {
                    reply: Reply::Failed(Why::MissingFromBatch.failure()),
                    statement: Some(Statement::Check),
                    elapsed: Duration::ZERO,
                    failure: Some(Why::MissingFromBatch),
                    reconnected: false,
                })
            });
        }
        bounded(
            Statement::Check,
            self.timeout,
            self.link.clone(),
            self.known_conn,
            move |conn| async move {
                let params = CheckParams {
                    name: &name,
                    process: &process,
                    renew: c.renew,
                    lease_micros,
                    floor: c.floor,
                    may_take: c.may_take,
                    may_insert: c.may_insert,
                    continues: c.continues,
                    expect: c.expect,
                };
                let row = conn
                    .check(&params)
                    .await
                    .map_err(|e| Why::Statement(Arc::new(e)))?;
                let row = CheckRow::decode(&row).map_err(|e| Why::Decode(Arc::new(e)))?;
                Ok(Reply::Checked(row))
            },
        )
    }

    fn release(&mut self, version: i64) -> Pending {
        let (name, process) = (self.name.clone(), self.process.clone());
        let channel = self.link.connector().statements().channel.clone();
        bounded(
            Statement::Release,
            self.timeout,
            self.link.clone(),
            self.known_conn,
            move |conn| async move {
                let released = conn
                    .release(&name, &process, version, &channel)
                    .await
                    .map_err(|e| Why::Statement(Arc::new(e)))?;
                Ok(Reply::Released(released))
            },
        )
    }

    fn run_precheck(&mut self) -> Pending {
        let timeout = self.timeout;
        let precheck = self.precheck.clone();
        Box::pin(async move {
            let started = std::time::Instant::now();
            let answer = match precheck {
                // The core asks only when one was configured; pass if not.
                None => Precheck::Pass,
                Some(f) => match tokio::time::timeout(timeout, f()).await {
                    Ok(Ok(true)) => Precheck::Pass,
                    Ok(Ok(false)) => Precheck::Refuse,
                    Ok(Err(error)) => {
                        warn!(%error, "precheck failed; not leading");
                        Precheck::Error
                    }
                    Err(_) => {
                        warn!(?timeout, "precheck timed out; not leading");
                        Precheck::Error
                    }
                },
            };
            Done {
                reply: Reply::Precheck(answer),
                statement: None,
                elapsed: started.elapsed(),
                failure: None,
                reconnected: false,
            }
        })
    }

    fn reply(&mut self, done: Done) {
        if done.reconnected {
            self.metrics.reconnect();
        }
        let statement = done.statement.unwrap_or(Statement::Check);
        match &done.failure {
            _ if done.statement.is_none() => {}
            None => self.link.succeeded(),
            // Nothing was attempted: neither a new failure to back off from nor a statement
            // error to count.
            Some(why @ Why::BackingOff) => {
                debug!(name = %self.name, process = %self.process, statement = statement.as_str(), "{why}");
            }
            Some(why) => {
                let failure = why.failure();
                if let Why::Statement(e) = why {
                    // Behind a transaction pooler a prepared statement goes missing: the next
                    // connection runs them unnamed.
                    self.link.connector().learned_transaction_pooling(e);
                }
                self.metrics.failed(statement, failure, done.elapsed);
                warn!(name = %self.name, process = %self.process, statement = statement.as_str(), error = %why, "statement failed");
            }
        }
        match done.reply {
            Reply::Checked(_) | Reply::Released(_) => self.signals.health.succeeded(),
            Reply::Failed(_) => self.signals.health.failed(),
            Reply::Precheck(_) | Reply::Connected { .. } => {}
        }
        match done.reply {
            Reply::Checked(row) => {
                self.metrics.checked(row.won, done.elapsed);
                debug!(name = %self.name, process = %self.process, won = row.won, holder = row.holder.as_deref(), version = row.version, latency = ?done.elapsed, "checked");
                self.input(Input::Checked(row.as_input()));
                if let Some(seen) = self.core.seen() {
                    let at = self
                        .signals
                        .cell
                        .at(seen.at)
                        .unwrap_or_else(std::time::Instant::now);
                    self.holder = Some(Holder::from_seen(&seen, row.holder.as_deref(), at));
                }
            }
            Reply::Released(released) => {
                self.metrics.released(released, done.elapsed);
                info!(name = %self.name, released, "released the flag for the next leader");
                self.input(Input::Released { released });
            }
            Reply::Failed(failure) => {
                if statement == Statement::Release {
                    self.release_failed = true;
                }
                self.input(Input::Failed(failure));
            }
            Reply::Precheck(answer) => self.input(Input::Precheck(answer)),
            Reply::Connected { id, server } => {
                info!(name = %self.name, process = %self.process, ?server, "connected");
                self.known_conn = Some(id);
                self.input(Input::Connected(server));
            }
        }
    }
}

/// Runs a statement: gets the connection (opening one if needed, bounded by the connect
/// budget), then runs the statement on it, bounded by the statement timeout. On a connection
/// the core has not heard of (`known` is another), the statement is not run: the reply says
/// what the server is, and the core sends the statement again knowing it. On a failure or
/// expiry the connection is abandoned (its socket closed, the statement cancelled on the
/// server): a hung server or a black-holed network cannot hold a statement longer than its
/// bound, and the next statement reconnects.
fn bounded<F, Fut>(
    statement: Statement,
    timeout: Duration,
    link: Arc<Link>,
    known: Option<u64>,
    run: F,
) -> Pending
where
    F: FnOnce(Arc<Conn>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Reply, Why>> + Send + 'static,
{
    Box::pin(async move {
        let started = std::time::Instant::now();
        let (reply, failure, reconnected) = match connection(&link).await {
            Err(why) => (Reply::Failed(why.failure()), Some(why), false),
            Ok((conn, reconnected)) if Some(conn.id) != known => (
                Reply::Connected {
                    id: conn.id,
                    server: conn.server,
                },
                None,
                reconnected,
            ),
            Ok((conn, reconnected)) => {
                let why = match tokio::time::timeout(timeout, run(conn.clone())).await {
                    Ok(Ok(reply)) => return done(reply, None, reconnected, started, statement),
                    Ok(Err(why)) => why,
                    Err(_) => Why::Timeout(timeout),
                };
                after_failure(&link, &conn, &why);
                (Reply::Failed(why.failure()), Some(why), reconnected)
            }
        };
        done(reply, failure, reconnected, started, statement)
    })
}

fn done(
    reply: Reply,
    failure: Option<Why>,
    reconnected: bool,
    started: std::time::Instant,
    statement: Statement,
) -> Done {
    Done {
        reply,
        statement: Some(statement),
        elapsed: started.elapsed(),
        failure,
        reconnected,
    }
}

async fn recv(notifications: &mut Option<mpsc::Receiver<()>>) -> Option<()> {
    match notifications {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The next value of the `wanted` switch; `None` once its sender is gone (the flag then keeps
/// the last value).
async fn changed(wanted: &mut Option<watch::Receiver<bool>>) -> Option<bool> {
    match wanted {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(*rx.borrow_and_update()),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}

async fn pulled(batch: &Option<Member>) {
    match batch {
        Some(batch) => batch.pulled().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        // On the lease's clock: a suspend must not delay a timeout.
        Some(at) => crate::boot_clock::sleep_until(at.into_std()).await,
        None => std::future::pending().await,
    }
}

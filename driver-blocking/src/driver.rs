//! The run loop: carry out the core's commands, wait for the earliest of a timer, a reply or a
//! notification, feed it in. It never waits on I/O: statements run on a worker thread and the
//! wait for their reply is bounded by the statement timeout.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;

use leadership_core::{Command, Failure, Flag as Core, Input, Instant, Precheck, WonBy};
use leadership_tokio::backoff::Backoff;
use leadership_tokio::metrics::{Metrics, Statement};
use leadership_tokio::pg::CheckRow;
use postgres::CancelToken;

use crate::error::Error;
use crate::guard::Signals;
use crate::worker::{self, Event, Reply, Request, Session, Setup};
use leadership_tokio::lease::LeaseCell;
use leadership_tokio::state::Holder;

/// The user's precheck, with its error already turned into text for the log.
pub(crate) type PrecheckFn = Box<dyn FnMut() -> Result<bool, String> + Send>;

/// What the loop receives: worker events, and the handle's requests.
pub(crate) enum Msg {
    Worker {
        gen: u64,
        event: Event,
    },
    /// Close: lower, release, reply, stop.
    Close(SyncSender<Result<(), Error>>),
    /// The handle was dropped: stop without releasing.
    Stop,
    /// The last guard was dropped: the leader-only work may have stopped.
    GuardsDropped,
}

/// An input produced by the loop itself, fed in once the commands are drained.
enum Pending {
    Checked(CheckRow),
    Released(bool),
    Failed(Failure),
    Precheck(Precheck),
    Notified,
    Close,
    WorkStopped,
}

struct Worker {
    gen: u64,
    tx: Sender<Request>,
    cancel: Option<CancelToken>,
}

/// The statement in flight.
struct InFlight {
    seq: u64,
    check: bool,
    sent: Instant,
    deadline: Instant,
}

impl InFlight {
    fn statement(&self) -> Statement {
        if self.check {
            Statement::Check
        } else {
            Statement::Release
        }
    }
}

pub(crate) struct Driver {
    core: Core,
    shared: Arc<LeaseCell>,
    signals: Arc<Signals>,
    /// The core asked for the leader-only work to stop ([`Command::StopWork`]) and has not
    /// been told it has: the loop tells it once no guard is alive.
    stopping: bool,
    setup: Arc<Setup>,
    rx: Receiver<Msg>,
    events: Sender<Msg>,
    worker: Option<Worker>,
    generations: u64,
    seq: u64,
    in_flight: Option<InFlight>,
    /// When the next connection may start, after connection failures and timeouts.
    backoff: Backoff,
    inputs: VecDeque<Pending>,
    closer: Option<SyncSender<Result<(), Error>>>,
    release_failed: bool,
    /// The last statement sent was a release.
    releasing: bool,
    precheck: Option<PrecheckFn>,
    metrics: Metrics,
}

impl Driver {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        core: Core,
        (shared, signals): (Arc<LeaseCell>, Arc<Signals>),
        setup: Arc<Setup>,
        rx: Receiver<Msg>,
        events: Sender<Msg>,
        precheck: Option<PrecheckFn>,
        metrics: Metrics,
    ) -> Driver {
        let backoff = Backoff::new(core.config().retry_interval(), core.config().interval() / 2);
        Driver {
            core,
            shared,
            signals,
            stopping: false,
            setup,
            rx,
            events,
            worker: None,
            generations: 0,
            seq: 0,
            in_flight: None,
            backoff,
            inputs: VecDeque::new(),
            closer: None,
            release_failed: false,
            releasing: false,
            precheck,
            metrics,
        }
    }

    /// Starts the first worker on the connection `start()` opened.
    pub(crate) fn adopt(&mut self, session: Session) -> std::io::Result<()> {
        let cancel = session.cancel_token();
        self.spawn_worker(Some(session))?;
        if let Some(w) = &mut self.worker {
            w.cancel = Some(cancel);
        }
        Ok(())
    }

    pub(crate) fn run(mut self) {
        self.metrics.state(false);
        loop {
            self.drain();
            if self.core.is_closed() {
                return self.finish();
            }
            if self.stopping && self.signals.guards() == 0 {
                // Guards made after the `Lower` are refused, so none can appear from here on.
                self.stopping = false;
                tracing::debug!(name = %self.setup.name, "leader-only work stopped");
                self.inputs.push_back(Pending::WorkStopped);
            }
            if let Some(input) = self.inputs.pop_front() {
                self.feed(input);
                continue;
            }
            // A leader's statements (and a release after the work stops) must not wait behind
            // the worker's watch for notifications, which only a follower needs.
            let prefer =
                self.core.is_leader(self.shared.now()) || self.stopping || self.in_flight.is_some();
            self.setup.prefer_requests.store(prefer, Ordering::Relaxed);
            let wake = match (
                self.core.poll_timeout(),
                self.in_flight.as_ref().map(|f| f.deadline),
            ) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let msg = match wake {
                Some(at) => self.rx.recv_timeout(at - self.shared.now()),
                None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match msg {
                Ok(Msg::Worker { gen, event }) => self.on_worker(gen, event),
                Ok(Msg::Close(reply)) => {
                    self.closer = Some(reply);
                    self.inputs.push_back(Pending::Close);
                }
                // The loop's top looks at the count.
                Ok(Msg::GuardsDropped) => {}
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return self.stop(),
                Err(RecvTimeoutError::Timeout) => self.on_timer(),
            }
        }
    }

    fn on_timer(&mut self) {
        let now = self.shared.now();
        if self.in_flight.as_ref().is_some_and(|f| now >= f.deadline) {
            if let Some(f) = self.in_flight.take() {
                self.metrics
                    .failed(f.statement(), Failure::Timeout, now - f.sent);
            }
            tracing::warn!(name = %self.setup.name, "statement timed out; replacing the connection");
            self.abandon_worker();
            self.backoff.failed(std::time::Instant::now());
            self.inputs.push_back(Pending::Failed(Failure::Timeout));
        }
        self.core.handle_timeout(now);
    }

    fn on_worker(&mut self, gen: u64, event: Event) {
        if self.worker.as_ref().map(|w| w.gen) != Some(gen) {
            return; // an abandoned worker's late news
        }
        match event {
            Event::Connected(cancel) => {
                if let Some(w) = &mut self.worker {
                    w.cancel = Some(cancel);
                }
            }
            Event::Notified => self.inputs.push_back(Pending::Notified),
            Event::Gone(why) => {
                tracing::warn!(name = %self.setup.name, error = %why, "database connection lost");
                self.worker = None;
                self.backoff.failed(std::time::Instant::now());
                if let Some(f) = self.in_flight.take() {
                    let elapsed = self.shared.now() - f.sent;
                    self.metrics.failed(f.statement(), Failure::Error, elapsed);
                    self.inputs.push_back(Pending::Failed(Failure::Error));
                }
            }
            Event::Reply { seq, reply } => {
                if self.in_flight.as_ref().map(|f| f.seq) != Some(seq) {
                    return;
                }
                let Some(f) = self.in_flight.take() else {
                    return;
                };
                let latency = self.shared.now() - f.sent;
                let input = match reply {
                    Reply::Checked(row) => {
                        self.backoff.succeeded();
                        self.metrics.checked(row.won, latency);
                        tracing::debug!(
                            name = %self.setup.name, won = row.won, holder = ?row.holder,
                            version = ?row.version, ?latency, "checked"
                        );
                        Pending::Checked(row)
                    }
                    Reply::Released(released) => {
                        self.backoff.succeeded();
                        self.metrics.released(released, latency);
                        Pending::Released(released)
                    }
                    Reply::Failed(why) => {
                        tracing::warn!(name = %self.setup.name, error = %why, "statement failed");
                        self.metrics.failed(f.statement(), Failure::Error, latency);
                        Pending::Failed(Failure::Error)
                    }
                };
                self.inputs.push_back(input);
            }
        }
    }

    fn feed(&mut self, input: Pending) {
        let now = self.shared.now();
        let result = match &input {
            Pending::Checked(row) => {
                let result = self.core.handle_input(now, Input::Checked(row.as_input()));
                if let Some(seen) = self.core.seen() {
                    let at = self
                        .shared
                        .at(seen.at)
                        .unwrap_or_else(std::time::Instant::now);
                    self.signals
                        .set_holder(Holder::from_seen(&seen, row.holder.as_deref(), at));
                }
                result
            }
            Pending::Released(released) => self.core.handle_input(
                now,
                Input::Released {
                    released: *released,
                },
            ),
            Pending::Failed(f) => {
                // Only a failed release leaves the row to expire; a failed check before it
                // is followed by the release.
                self.release_failed |= self.releasing;
                self.core.handle_input(now, Input::Failed(*f))
            }
            Pending::Precheck(p) => self.core.handle_input(now, Input::Precheck(*p)),
            Pending::Notified => self.core.handle_input(now, Input::Notified),
            Pending::Close => self.core.handle_input(now, Input::Close),
            Pending::WorkStopped => self.core.handle_input(now, Input::WorkStopped),
        };
        // The loop replies to each statement once and drains after each input, so the core
        // never refuses an input; if it did, that is a bug in this file.
        if let Err(e) = result {
            tracing::error!(name = %self.setup.name, error = %e, "driver broke the core's contract");
            debug_assert!(false, "contract error: {e}");
        }
    }

    /// Carries out every queued command.
    fn drain(&mut self) {
        while let Some(command) = self.core.poll_command() {
            self.metrics.command(&command);
            let name = &self.setup.name;
            match command {
                Command::Check { renew } => self.send(|seq| Request::Check { seq, renew }, true),
                Command::Release { version } => {
                    self.send(|seq| Request::Release { seq, version }, false)
                }
                Command::RunPrecheck => {
                    let answer = match self.precheck.as_mut().map(|f| f()) {
                        Some(Ok(true)) | None => Precheck::Pass,
                        Some(Ok(false)) => Precheck::Refuse,
                        Some(Err(e)) => {
                            tracing::warn!(name = %name, error = %e, "precheck failed");
                            Precheck::Error
                        }
                    };
                    self.inputs.push_back(Pending::Precheck(answer));
                }
                Command::Raise(lease) => {
                    self.signals.raise(lease);
                    if lease.won_by == WonBy::TookOver {
                        tracing::info!(name = %name, token = lease.token, "took over the flag: raised");
                    } else {
                        tracing::info!(name = %name, token = lease.token, won_by = ?lease.won_by, "raised");
                    }
                }
                Command::Renewed(lease) => {
                    self.signals.raise(lease);
                    tracing::debug!(name = %name, version = lease.version, "renewed");
                }
                Command::Lower(reason) => {
                    // Every guard turns invalid and its waiters wake; watchers hear of it.
                    self.signals.lower();
                    tracing::info!(name = %name, ?reason, "lowered");
                }
                // The guards were told by the `Lower` before it; the loop waits for them to be
                // dropped without blocking (the core bounds the wait by the lease's deadline).
                Command::StopWork => self.stopping = true,
                Command::Anomaly(anomaly) => {
                    tracing::warn!(name = %name, ?anomaly, "odd row in the flags table");
                }
                Command::Closed => self.stopping = false,
            }
        }
    }

    /// Sends a statement to the worker, starting one if needed; a failure to do so is the
    /// statement's reply.
    fn send(&mut self, request: impl FnOnce(u64) -> Request, check: bool) {
        let now = self.shared.now();
        self.releasing = !check;
        if self.worker.is_none() {
            if !self.backoff.ready(std::time::Instant::now()) {
                tracing::debug!(name = %self.setup.name, "not reconnecting yet");
                return self.inputs.push_back(Pending::Failed(Failure::Error));
            }
            if let Err(e) = self.spawn_worker(None) {
                tracing::warn!(name = %self.setup.name, error = %e, "cannot spawn a connection thread");
                return self.inputs.push_back(Pending::Failed(Failure::Error));
            }
        }
        self.seq += 1;
        let sent = self
            .worker
            .as_ref()
            .is_some_and(|w| w.tx.send(request(self.seq)).is_ok());
        if !sent {
            self.worker = None;
            return self.inputs.push_back(Pending::Failed(Failure::Error));
        }
        self.in_flight = Some(InFlight {
            seq: self.seq,
            check,
            sent: now,
            deadline: now + self.core.config().timeout(),
        });
    }

    fn spawn_worker(&mut self, session: Option<Session>) -> std::io::Result<()> {
        self.generations += 1;
        let gen = self.generations;
        if session.is_none() {
            self.metrics.reconnect();
        }
        let tx = worker::spawn(gen, Arc::clone(&self.setup), session, self.events.clone())?;
        self.worker = Some(Worker {
            gen,
            tx,
            cancel: None,
        });
        Ok(())
    }

    /// Leaves a hung worker behind: its statement is cancelled from another thread (the
    /// cancel request opens its own connection, which may hang too) and it exits when it
    /// wakes to a closed channel.
    fn abandon_worker(&mut self) {
        let Some(worker) = self.worker.take() else {
            return;
        };
        if let Some(token) = worker.cancel {
            let setup = Arc::clone(&self.setup);
            let _ = std::thread::Builder::new()
                .name("leadership-cancel".into())
                .spawn(move || (setup.cancel)(&token));
        }
    }

    fn finish(mut self) {
        self.signals.lower();
        self.metrics.state(false);
        let result = if self.release_failed {
            Err(Error::ReleaseFailed)
        } else {
            Ok(())
        };
        if let Some(closer) = self.closer.take() {
            let _ = closer.send(result);
        }
        self.abandon_quietly();
    }

    fn stop(mut self) {
        self.signals.lower();
        self.metrics.state(false);
        self.abandon_quietly();
    }

    /// Drops the worker's channel: it exits after its current statement, closing the
    /// connection.
    fn abandon_quietly(&mut self) {
        self.worker = None;
    }
}

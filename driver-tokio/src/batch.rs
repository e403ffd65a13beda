//! A set's batch: the checks of its flags that fall due together go to the server as one
//! statement, [`sql::CHECK_BATCH`](leadership_core::sql::CHECK_BATCH): one round trip and one
//! transaction, so one commit and one `fdatasync` for every renewal in it.
//!
//! Every decision stays with each flag's core; this only carries checks. When a check
//! arrives and no batch is in flight, the batcher asks every other flag of the set whose
//! renew may go early ([`Flag::poll_early_check`](leadership_core::Flag::poll_early_check)
//! has passed) to start it now ([`Input::Batching`](leadership_core::Input::Batching)), waits
//! briefly for their checks (or their "no"), and sends them all; checks that arrive meanwhile
//! go along, and so do those that arrive while a batch is in flight, in the next batch, sent
//! when it returns (a renew pulled a moment too late still shares a statement). Each flag
//! then gets its own
//! row, as if it had run the single check: won, not won, or not attempted (another
//! transaction holds its row's lock: `Failure::NotAttempted`, for that flag alone). A failure
//! of the statement is every flag's failure. The connection is dropped only if it is broken
//! ([`after_failure`]).
//!
//! Timing: a check's lease counts from when its core emitted it, which is never later than
//! the batch's send. Every check of a batch has its answer within the statement timeout of
//! when it was handed to the batcher: the batch's own bound is the timeout less the time its
//! oldest check waited (for the flags pulled early, at most [`PULL_WAIT`]; for a batch in
//! flight, at most its own bound, after which the connection is abandoned anyway). So a
//! batched check takes no longer than a single one, and the
//! schedule the configuration is validated against (a renew, and should it fail its retry, each
//! within the timeout, before the lease is at risk) holds unchanged; a renew sent early only
//! leaves more of the lease after it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use leadership_core::Identity;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::connection::{BatchParams, Conn};
use crate::done::{after_failure, connection, CheckCommand, Done, Reply, Why};
use crate::link::Link;
use crate::pg::CheckRow;
use crate::recorder::Statement;

/// The longest the batcher waits for the flags it asked to check early before it sends: 25 ms,
/// or a quarter of the statement timeout if that is less. They answer within microseconds on
/// an idle machine; on a loaded one a flag that misses it costs a statement of its own.
pub(crate) const PULL_WAIT: Duration = Duration::from_millis(25);

/// The batcher of one set: flags join it ([`Batcher::join`]) and send their checks through
/// their [`Member`].
pub(crate) struct Batcher {
    tx: mpsc::UnboundedSender<Message>,
    members: Arc<Members>,
    next: AtomicU64,
}

/// Who belongs to the set, and when each one's renew may go early.
struct Members {
    epoch: Instant,
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
}

struct Slot {
    /// Nanoseconds after `epoch` from which this flag's renew may go early; `u64::MAX` when
    /// it may not.
    early: AtomicU64,
    /// Rung to ask the flag to start its renew now.
    pull: Notify,
}

/// One flag's place in its set's batch.
pub(crate) struct Member {
    id: u64,
    slot: Arc<Slot>,
    batcher: Arc<Batcher>,
}

enum Message {
    Check(Submission),
    /// A flag asked to renew early started nothing.
    Declined(u64),
}

/// One flag's check, waiting for its batch.
pub(crate) struct Submission {
    member: u64,
    pub(crate) name: Arc<str>,
    pub(crate) process: Arc<str>,
    pub(crate) lease_micros: i64,
    pub(crate) check: CheckCommand,
    /// The connection this flag's core knows ([`Input::Connected`](leadership_core::Input::Connected)).
    pub(crate) known: Option<u64>,
    pub(crate) timeout: Duration,
    /// When the flag handed it over: its timeout counts from here.
    at: Instant,
    reply: oneshot::Sender<Done>,
}

impl Batcher {
    /// A batcher for the flags sharing `link`, with its task.
    pub(crate) fn spawn(link: Arc<Link>) -> Arc<Batcher> {
        let (tx, rx) = mpsc::unbounded_channel();
        let members = Arc::new(Members {
            epoch: Instant::now(),
            slots: Mutex::new(HashMap::new()),
        });
        tokio::spawn(run(rx, members.clone(), link));
        Arc::new(Batcher {
            tx,
            members,
            next: AtomicU64::new(0),
        })
    }

    /// A new flag's place in the batch.
    pub(crate) fn join(self: &Arc<Self>) -> Member {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            early: AtomicU64::new(u64::MAX),
            pull: Notify::new(),
        });
        self.members.slots().insert(id, slot.clone());
        Member {
            id,
            slot,
            batcher: self.clone(),
        }
    }
}

impl Members {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks every flag whose renew may go early by now, and that has no check queued, to
    /// start it; returns whom it asked.
    fn pull(&self, queued: &HashSet<u64>) -> HashSet<u64> {
        let now = nanos_since(self.epoch, Instant::now());
        let mut pulled = HashSet::new();
        for (id, slot) in self.slots().iter() {
            if slot.early.load(Ordering::Acquire) <= now && !queued.contains(id) {
                slot.pull.notify_one();
                pulled.insert(*id);
            }
        }
        pulled
    }
}

fn nanos_since(epoch: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX - 1)
}

impl Member {
    /// Publishes from when this flag's renew may go early (`None`: it may not).
    pub(crate) fn set_early(&self, at: Option<Instant>) {
        let at = at.map_or(u64::MAX, |at| nanos_since(self.batcher.members.epoch, at));
        self.slot.early.store(at, Ordering::Release);
    }

    /// Resolves when the batcher asks this flag to renew now.
    pub(crate) async fn pulled(&self) {
        self.slot.pull.notified().await;
    }

    /// Queues a check for the next batch; the receiver gets its outcome.
    pub(crate) fn submit(
        &self,
        name: Arc<str>,
        process: Arc<str>,
        lease_micros: i64,
        check: CheckCommand,
        known: Option<u64>,
        timeout: Duration,
    ) -> oneshot::Receiver<Done> {
        let (reply, rx) = oneshot::channel();
        let submission = Submission {
            member: self.id,
            name,
            process,
            lease_micros,
            check,
            known,
            timeout,
            at: Instant::now(),
            reply,
        };
        // The task lives while any member does: the send cannot fail.
        let _ = self.batcher.tx.send(Message::Check(submission));
        rx
    }

    /// Tells the batcher that the flag it asked to renew early started nothing.
    pub(crate) fn decline(&self) {
        let _ = self.batcher.tx.send(Message::Declined(self.id));
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.batcher.members.slots().remove(&self.id);
    }
}

/// The batcher's task: ends once the set and all its flags are gone.
async fn run(mut rx: mpsc::UnboundedReceiver<Message>, members: Arc<Members>, link: Arc<Link>) {
    let mut queue: Vec<Submission> = Vec::new();
    let mut awaited: HashSet<u64> = HashSet::new();
    let take = |message, queue: &mut Vec<Submission>, awaited: &mut HashSet<u64>| match message {
        Message::Check(s) => {
            awaited.remove(&s.member);
            queue.push(s);
        }
        Message::Declined(id) => {
            awaited.remove(&id);
        }
    };
    while let Some(message) = rx.recv().await {
        take(message, &mut queue, &mut awaited);
        while let Ok(message) = rx.try_recv() {
            take(message, &mut queue, &mut awaited);
        }
        if queue.is_empty() {
            continue;
        }
        let queued: HashSet<u64> = queue.iter().map(|s| s.member).collect();
        awaited = members.pull(&queued);
        let timeout = queue.iter().map(|s| s.timeout).min().unwrap_or_default();
        let until = tokio::time::Instant::now() + PULL_WAIT.min(timeout / 4);
        while !awaited.is_empty() {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(message)) => take(message, &mut queue, &mut awaited),
                Ok(None) | Err(_) => break,
            }
        }
        awaited.clear();
        send(&link, std::mem::take(&mut queue)).await;
    }
}

/// Sends one batch and hands each flag its outcome.
async fn send(link: &Link, batch: Vec<Submission>) {
    let started = Instant::now();
    let (conn, mut reconnected) = match connection(link).await {
        Ok(connected) => connected,
        Err(why) => {
            for s in batch {
                answer(
                    s,
                    Reply::Failed(why.failure()),
                    Some(why.clone()),
                    false,
                    started,
                );
            }
            return;
        }
    };
    // Statements run only on a connection the core has heard of: the others are told of it,
    // and send their check again.
    let mut groups: HashMap<(Option<Identity>, Arc<str>, i64), Vec<Submission>> = HashMap::new();
    for s in batch {
        if s.known == Some(conn.id) {
            let key = (s.check.expect, s.process.clone(), s.lease_micros);
            groups.entry(key).or_default().push(s);
        } else {
            let reply = Reply::Connected {
                id: conn.id,
                server: conn.server,
            };
            answer(s, reply, None, std::mem::take(&mut reconnected), started);
        }
    }
    // One statement per server expected (the flags of a set expect the same one but for a
    // moment after a pooler swapped it).
    for group in groups.into_values() {
        let first_reconnected = std::mem::take(&mut reconnected);
        run_group(link, &conn, group, first_reconnected, started).await;
    }
}

/// Runs one group's statement: every check of `group` (never empty) shares the server expected,
/// the process and the lease.
async fn run_group(
    link: &Link,
    conn: &Arc<Conn>,
    group: Vec<Submission>,
    reconnected: bool,
    started: Instant,
) {
    // Each check's timeout counts from when its flag handed it over.
    let timeout = group
        .iter()
        .map(|s| s.timeout.saturating_sub(s.at.elapsed()))
        .min()
        .unwrap_or_default()
        .max(Duration::from_millis(1));
    let first = &group[0];
    let params = BatchParams {
        names: group.iter().map(|s| &*s.name).collect(),
        process: &first.process,
        renew: group.iter().map(|s| s.check.renew).collect(),
        lease_micros: first.lease_micros,
        floor: group.iter().map(|s| s.check.floor).collect(),
        may_take: group.iter().map(|s| s.check.may_take).collect(),
        may_insert: group.iter().map(|s| s.check.may_insert).collect(),
        continues: group.iter().map(|s| s.check.continues).collect(),
        expect: first.check.expect,
    };
    let why = match tokio::time::timeout(timeout, conn.check_batch(&params)).await {
        Ok(Ok(rows)) => {
            drop(params);
            let mut rows: HashMap<String, tokio_postgres::Row> = rows
                .into_iter()
                .filter_map(|row| Some((row.try_get::<_, String>("name").ok()?, row)))
                .collect();
            let mut reconnected = reconnected;
            for s in group {
                let (reply, why) = match rows.remove(&*s.name) {
                    None => (
                        Reply::Failed(Why::MissingFromBatch.failure()),
                        Some(Why::MissingFromBatch),
                    ),
                    Some(row) => outcome(&row),
                };
                answer(s, reply, why, std::mem::take(&mut reconnected), started);
            }
            return;
        }
        Ok(Err(e)) => Why::Statement(Arc::new(e)),
        Err(_) => Why::Timeout(timeout),
    };
    after_failure(link, conn, &why);
    let mut reconnected = reconnected;
    for s in group {
        let reply = Reply::Failed(why.failure());
        answer(
            s,
            reply,
            Some(why.clone()),
            std::mem::take(&mut reconnected),
            started,
        );
    }
}

/// One flag's row of the batch: its check's reply, or "not attempted".
fn outcome(row: &tokio_postgres::Row) -> (Reply, Option<Why>) {
    match row.try_get::<_, bool>("attempted") {
        Ok(false) => (
            Reply::Failed(Why::NotAttempted.failure()),
            Some(Why::NotAttempted),
        ),
        Ok(true) => match CheckRow::decode(row) {
            Ok(row) => (Reply::Checked(row), None),
            Err(e) => {
                let why = Why::Decode(Arc::new(e));
                (Reply::Failed(why.failure()), Some(why))
            }
        },
        Err(e) => {
            let why = Why::Statement(Arc::new(e));
            (Reply::Failed(why.failure()), Some(why))
        }
    }
}

fn answer(s: Submission, reply: Reply, failure: Option<Why>, reconnected: bool, started: Instant) {
    let _ = s.reply.send(Done {
        reply,
        statement: Some(Statement::Check),
        elapsed: started.elapsed(),
        failure,
        reconnected,
    });
}

//! [`Balanced`]: a group of shard flags shared by a fleet, each process leading its share.
//!
//! Every decision is the core's ([`leadership_core::balance`]); this module runs the scan
//! ([`sql::GROUP`](leadership_core::sql::GROUP)) on the set's connection, turns each view into
//! the per-shard `wanted` switches of the shard flags' cores, and reports ownership.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use leadership_core::balance::{self, Entry, View};
use tokio::sync::{broadcast, watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::error::Error;
use crate::flag::Flag;
use crate::link::Link;
use crate::parts::Shard;
use crate::recorder::Metrics;
use crate::set::FlagSet;
use crate::state::State;

/// A change of ownership of one shard in this process, from [`Balanced::subscribe_ownership`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ownership {
    /// This process now leads shard `.0` (its flag raised).
    Owning(usize),
    /// This process no longer leads shard `.0` (its flag lowered: handed over, lost, or
    /// closed).
    NotOwning(usize),
}

/// What the latest scan of the group showed, and what this process made of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assignment {
    /// The live members, sorted (this process included once its member flag leads).
    pub members: Vec<String>,
    /// How many shards each member held at the scan, in the order of `members`.
    pub held: Vec<usize>,
    /// The shards whose live lease was held by a process that is not a live member (a Go
    /// flag, or a process whose member row expired first): nobody takes them until they
    /// expire.
    pub foreign: usize,
    /// The shards designated to this process: the ones it wants.
    pub wanted: Vec<usize>,
    /// Live shards of the group numbered beyond this process's shard count: another process
    /// was given a larger count. Every process of a group must use the same; until then the
    /// processes disagree on the balance (never on who leads a shard). Logged as a warning.
    pub unknown_shards: usize,
    /// When the scan returned; `None` before the first.
    pub at: Option<Instant>,
}

/// A group of `N` shard flags shared by the processes of a fleet, each leading about `N / M`
/// of them with `M` live processes; made by [`FlagSet::balanced`].
///
/// Membership needs no coordinator: each process competes for a member flag of its own,
/// `<group>/member/<process>`, an ordinary row whose lease is its heartbeat. Every half
/// interval (jittered) the set reads every row of the group in one statement
/// ([`sql::GROUP`](leadership_core::sql::GROUP)) and computes from it, as every process does,
/// one designated owner per shard ([`balance::assign`]): members within one of `N / M` keep
/// what they hold; a member below the floor gets the free shards and the surplus of those
/// above their targets. Each shard is an ordinary [`Flag`] named `<group>/shard/<i>` whose
/// core is told whether this process wants it: wanted, it competes as usual (and takes the
/// shard when free, expired or released, at once on the release's notification); unwanted,
/// it does not check at all, and if it leads it stops the work and releases through the normal
/// path. A shard is therefore never led by two processes at once: every handover is the
/// protocol's. A member that cannot lead what it is designated leaves the group, so no shard
/// stays ownerless: for good once one of its shard flags was closed, for a lease when its scans
/// of the group have failed for a lease while its heartbeat renews.
///
/// The handle is cheap to clone; every clone drives the same group. Per shard the API is the [`Flag`]'s (`is_raised`, `raised`, `lead`, guards, tokens);
/// [`subscribe_ownership`](Balanced::subscribe_ownership) streams `Owning`/`NotOwning`.
///
/// ```no_run
/// # async fn demo() -> Result<(), leadership_tokio::Error> {
/// use leadership_tokio::{FlagSet, Ownership};
/// let set = FlagSet::builder("pod-a")
///     .connect_str("host=db user=app")
///     .start(tokio_postgres::NoTls)
///     .await?;
/// let shards = set.balanced("orders", 64)?;
/// let mut changes = shards.subscribe_ownership();
/// while let Ok(change) = changes.recv().await {
///     match change {
///         Ownership::Owning(i) => println!("start shard {i} (token {:?})", shards.shard(i).lease()),
///         Ownership::NotOwning(i) => println!("stop shard {i}"),
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Balanced {
    inner: Arc<Inner>,
}

struct Inner {
    group: String,
    member: Flag,
    shards: Vec<Flag>,
    ownership: broadcast::Sender<Ownership>,
    assignment: watch::Receiver<Assignment>,
    stop: CancellationToken,
    /// The balancing task (the ownership forwarders end by themselves).
    balancer: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The flags close themselves when their last handle goes.
        self.stop.cancel();
    }
}

impl std::fmt::Debug for Balanced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balanced")
            .field("group", &self.inner.group)
            .field("shards", &self.inner.shards.len())
            .field("owned", &self.owned().len())
            .finish_non_exhaustive()
    }
}

impl FlagSet {
    /// Joins the balanced group `group` of `shards` shards on this set's connection: adds the
    /// member flag `<group>/member/<process>` and the shard flags `<group>/shard/0` …
    /// `<group>/shard/{shards-1}` (dormant until the balance designates them to this process),
    /// and starts the balancing task. Every process of the group must use the same `shards`
    /// and interval. Fails like [`add`](FlagSet::add) for an invalid or duplicate name. Needs
    /// a tokio runtime.
    ///
    /// ```no_run
    /// # fn demo(set: &leadership_tokio::FlagSet) -> Result<(), leadership_tokio::Error> {
    /// let shards = set.balanced("orders", 64)?;
    /// # Ok(()) }
    /// ```
    pub fn balanced(&self, group: &str, shards: usize) -> Result<Balanced, Error> {
        let process = self.process().to_string();
        let config = self
            .settings()
            .config_for(&balance::member_name(group, &process))?;
        let member = self.add(balance::member_name(group, &process))?;
        let mut flags = Vec::with_capacity(shards);
        let mut switches = Vec::with_capacity(shards);
        let rescan = Arc::new(Notify::new());
        for i in 0..shards {
            let (tx, rx) = watch::channel(false);
            let shard = Shard {
                wanted: rx,
                rescan: rescan.clone(),
            };
            match self.add_with(balance::shard_name(group, i), Some(shard)) {
                Ok(flag) => flags.push(flag),
                Err(e) => {
                    // Leave nothing half-built running.
                    for flag in flags.into_iter().chain([member]) {
                        tokio::spawn(async move { flag.close().await });
                    }
                    return Err(e);
                }
            }
            switches.push(tx);
        }
        let (ownership, _) = broadcast::channel((shards * 4).max(1024));
        let stop = CancellationToken::new();
        for (i, flag) in flags.iter().enumerate() {
            tokio::spawn(forward(
                i,
                flag.subscribe(),
                ownership.clone(),
                stop.clone(),
            ));
        }
        let (assignment_tx, assignment) = watch::channel(Assignment::default());
        let balancer = Balancer {
            metrics: self.settings().metrics(group, &process),
            group: group.to_string(),
            process,
            member: member.clone(),
            switches,
            rescan,
            link: self.link().clone(),
            lease_micros: config.interval_micros(),
            period: config.interval() / 2,
            timeout: config.timeout(),
            assignment: assignment_tx,
            rng: crate::parts::random_seed() | 1,
            failing_since: None,
        };
        let balancer = tokio::spawn(balancer.run(stop.clone()));
        info!(group, shards, "joined the balanced group");
        Ok(Balanced {
            inner: Arc::new(Inner {
                group: group.to_string(),
                member,
                shards: flags,
                ownership,
                assignment,
                stop,
                balancer: Mutex::new(Some(balancer)),
            }),
        })
    }
}

impl Balanced {
    /// The group's name.
    pub fn group(&self) -> &str {
        &self.inner.group
    }

    /// How many shards the group has.
    pub fn len(&self) -> usize {
        self.inner.shards.len()
    }

    /// Whether the group has no shards.
    pub fn is_empty(&self) -> bool {
        self.inner.shards.is_empty()
    }

    /// Shard `index`'s flag: `is_raised`, `raised`, `lead`, guards and fencing tokens as for any
    /// [`Flag`]. Panics if `index` is out of range. Closing one shard's flag makes this process
    /// leave the group for good (it can no longer lead what the balance designates to it): the
    /// others take every shard.
    pub fn shard(&self, index: usize) -> &Flag {
        &self.inner.shards[index]
    }

    /// Every shard's flag, by index.
    pub fn shards(&self) -> &[Flag] {
        &self.inner.shards
    }

    /// This process's member flag (`<group>/member/<process>`): raised while its heartbeat
    /// holds.
    pub fn member(&self) -> &Flag {
        &self.inner.member
    }

    /// The shards this process leads now (each flag's `is_raised`).
    pub fn owned(&self) -> Vec<usize> {
        (0..self.len())
            .filter(|&i| self.inner.shards[i].is_raised())
            .collect()
    }

    /// A stream of [`Ownership`] changes, from now on. A receiver that falls more than
    /// `max(4 × shards, 1024)` changes behind gets `Lagged`: call [`owned`](Balanced::owned)
    /// to resynchronise. The deadline is the authority, as for [`Flag::subscribe`]: guard the
    /// work with the shard's [`Guard`](crate::Guard).
    pub fn subscribe_ownership(&self) -> broadcast::Receiver<Ownership> {
        self.inner.ownership.subscribe()
    }

    /// What the latest scan showed and which shards this process wants.
    pub fn assignment(&self) -> Assignment {
        self.inner.assignment.borrow().clone()
    }

    /// A receiver of the [`Assignment`], updated after each scan.
    pub fn subscribe_assignment(&self) -> watch::Receiver<Assignment> {
        self.inner.assignment.clone()
    }

    /// Leaves the group gracefully: stops balancing, releases the member flag, then closes
    /// every shard (each stops its work and releases its row, notifying the others). The
    /// others hear the shards' releases and read the group at once, so they stop counting this
    /// process and take its shards within milliseconds, not at their next scan. Returns the
    /// first error.
    pub async fn close(&self) -> Result<(), Error> {
        self.inner.stop.cancel();
        let balancer = self
            .inner
            .balancer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = balancer {
            let _ = task.await;
        }
        let member = self.inner.member.close().await;
        let closes: Vec<_> = self
            .inner
            .shards
            .iter()
            .map(|f| {
                let f = f.clone();
                tokio::spawn(async move { f.close().await })
            })
            .collect();
        let mut result = member;
        for close in closes {
            let r = close.await.unwrap_or(Err(Error::DriverGone));
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}

/// Forwards shard `index`'s raise and lower as [`Ownership`] changes.
async fn forward(
    index: usize,
    mut state: watch::Receiver<State>,
    tx: broadcast::Sender<Ownership>,
    stop: CancellationToken,
) {
    let mut owning = false;
    loop {
        let now = state.borrow_and_update().is_raised();
        if now != owning {
            owning = now;
            let _ = tx.send(if now {
                Ownership::Owning(index)
            } else {
                Ownership::NotOwning(index)
            });
        }
        tokio::select! {
            changed = state.changed() => if changed.is_err() { break },
            () = stop.cancelled(), if !owning => break,
        }
    }
    if owning {
        let _ = tx.send(Ownership::NotOwning(index));
    }
}

/// How long a read of the group waits after the first release it heard, to take in the
/// others of the same leave: a leave is taken up in about this, and a burst of releases costs
/// one read, not one each.
const RESCAN_GATHER: Duration = Duration::from_millis(10);

struct Balancer {
    /// The group's metrics (`name` = the group).
    metrics: Metrics,
    group: String,
    process: String,
    member: Flag,
    switches: Vec<watch::Sender<bool>>,
    /// Rung by a dormant shard that heard of a release: read the group now.
    rescan: Arc<Notify>,
    link: Arc<Link>,
    lease_micros: i64,
    period: Duration,
    timeout: Duration,
    assignment: watch::Sender<Assignment>,
    rng: u64,
    /// When the group scans started failing (while this process counted as a member).
    failing_since: Option<tokio::time::Instant>,
}

impl Balancer {
    async fn run(mut self, stop: CancellationToken) {
        let mut member = self.member.subscribe();
        let rescan = self.rescan.clone();
        let mut next = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep_until(next) => {}
                // A shard this process does not hold was released: a member that left
                // releases its own row first, so this read already counts it out. The
                // releases of one leave (or of one rebalance) come together: a short wait
                // makes them one read.
                () = rescan.notified() => {
                    debug!(group = %self.group, "a release heard; reading the group");
                    tokio::time::sleep(RESCAN_GATHER).await;
                    // Takes the wake-up the gathered releases left, if any (a timeout polls
                    // its future once before it looks at the clock).
                    let _ = tokio::time::timeout(Duration::ZERO, rescan.notified()).await;
                }
                // The first scan as soon as the heartbeat leads.
                changed = member.changed() => {
                    if changed.is_err() { return }
                    if !member.borrow_and_update().is_raised() { continue }
                }
            }
            next = tokio::time::Instant::now() + self.jittered();
            // Until this process's own heartbeat leads, it decides nothing: the others do not
            // count it yet.
            if !self.member.is_raised() {
                continue;
            }
            if let Some(i) = self.switches.iter().position(|s| s.is_closed()) {
                // A shard flag was closed (`shard(i).close()`): the others' balance still
                // designates shards to this member, which it can no longer lead. Leave for
                // good, so the others take every shard.
                warn!(group = %self.group, shard = i, "a shard flag of this process was closed: it cannot lead what the balance designates to it, so it leaves the group");
                self.leave(None);
                return;
            }
            match self.scan().await {
                Ok(rows) => {
                    self.failing_since = None;
                    self.apply(&rows)
                }
                Err(why) => {
                    self.metrics.scan_failed();
                    let since = *self
                        .failing_since
                        .get_or_insert_with(tokio::time::Instant::now);
                    let lease = Duration::from_micros(self.lease_micros.unsigned_abs());
                    if since.elapsed() >= lease {
                        // The others count this member, by its heartbeat, and designate it
                        // shards from views it cannot read: those would stay ownerless. Step
                        // out for a lease, then join again and read once more.
                        warn!(group = %self.group, error = %why, failing_for = ?since.elapsed(), "could not read the group for a lease: leaving it for a lease, handing over every shard");
                        self.failing_since = None;
                        self.leave(Some(lease));
                    } else {
                        warn!(group = %self.group, error = %why, "could not read the group; keeping the current assignment")
                    }
                }
            }
        }
    }

    /// Leaves the group: wants no shard (each one led is handed over through the normal path)
    /// and resigns the member flag for `hold_off`, or closes it if `None`. The others stop
    /// counting this process once its member row is released, and take its shards.
    fn leave(&self, hold_off: Option<Duration>) {
        for switch in &self.switches {
            switch.send_if_modified(|w| std::mem::replace(w, false));
        }
        let member = self.member.clone();
        let group = self.group.clone();
        tokio::spawn(async move {
            let left = match hold_off {
                Some(hold_off) => member.resign(Some(hold_off)).await,
                None => member.close().await,
            };
            if let Err(e) = left {
                warn!(%group, error = %e, "leaving the group: the member flag's release failed; its row expires");
            }
        });
    }

    /// The period, ±10 %, so that processes started together do not scan together.
    fn jittered(&mut self) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let ppm = self.rng % 200_000; // 0..20 %
        self.period.mul_f64(0.9 + ppm as f64 / 1_000_000.0)
    }

    async fn scan(&self) -> Result<Vec<(String, String, bool)>, String> {
        let budget = self.link.connector().connect_budget();
        let conn = match tokio::time::timeout(budget, self.link.get()).await {
            Ok(Ok((conn, _))) => conn,
            Ok(Err(_)) => return Err("no connection".into()),
            Err(_) => return Err(format!("no connection within {budget:?}")),
        };
        let prefix = balance::group_prefix(&self.group);
        match tokio::time::timeout(self.timeout, conn.group(&prefix, self.lease_micros)).await {
            Ok(Ok(rows)) => {
                self.link.succeeded();
                Ok(rows)
            }
            Ok(Err(e)) => Err(crate::pg::Chain(&e).to_string()),
            Err(_) => {
                self.link.abandon(&conn);
                Err(format!("no reply within {:?}", self.timeout))
            }
        }
    }

    fn apply(&self, rows: &[(String, String, bool)]) {
        let shards = self.switches.len();
        let mut members = vec![self.process.as_str()];
        let mut held = Vec::new();
        let mut unknown_shards = 0;
        for (name, holder, live) in rows {
            // A row that is not live says nothing: an expired shard beyond the count may be
            // left from a group that was made smaller on purpose.
            if !live {
                continue;
            }
            match balance::parse(&self.group, name) {
                Some(Entry::Member(process)) if process == holder => members.push(process),
                Some(Entry::Shard(i)) if i < shards => held.push((i, holder.as_str())),
                Some(Entry::Shard(_)) => unknown_shards += 1,
                _ => {}
            }
        }
        if unknown_shards > 0 && self.assignment.borrow().unknown_shards == 0 {
            warn!(group = %self.group, shards, unknown_shards, "another process of the group leads shards beyond this process's shard count: give every process the same count (the `shards` of `FlagSet::balanced`)");
        }
        let view = View::new(shards, members, held);
        let wanted = balance::wanted(&view, &self.process);
        let mut changed = 0;
        for (switch, &want) in self.switches.iter().zip(&wanted) {
            if switch.send_if_modified(|w| std::mem::replace(w, want) != want) {
                changed += 1;
            }
        }
        self.metrics
            .balanced(view.members.len(), wanted.iter().filter(|&&w| w).count());
        let counts = view.counts();
        let foreign = view
            .holders
            .iter()
            .flatten()
            .filter(|h| view.members.binary_search(h).is_err())
            .count();
        if changed > 0 {
            debug!(group = %self.group, members = view.members.len(), changed, "assignment changed");
        }
        self.assignment.send_replace(Assignment {
            members: view.members.iter().map(|m| m.to_string()).collect(),
            held: counts,
            foreign,
            wanted: (0..shards).filter(|&i| wanted[i]).collect(),
            unknown_shards,
            at: Some(Instant::now()),
        });
    }
}

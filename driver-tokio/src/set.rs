//! [`FlagSet`]: many flags of one process over one connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::batch::Batcher;
use crate::builder::{FlagBuilder, FlagSetBuilder, Set};
use crate::error::Error;
use crate::flag::Flag;
use crate::link::Link;
use crate::make_tls::MakeTls;
use crate::parts::{random_seed, Shard};

/// Many flags (different names, one process, one table) over one connection: a process that
/// owns 100 shards competes for 100 flags without opening 100 connections.
///
/// Each flag keeps its own core and its own small driver task, and is a [`Flag`] like any
/// other (`is_raised`, `lease`, `raised`, `subscribe`, `current_holder`, `close`). Their
/// statements share the set's connection and its `LISTEN`; notifications are routed to the
/// flag they name.
///
/// **Batches.** The checks that fall due together go to the server as one statement
/// ([`sql::CHECK_BATCH`](leadership_core::sql::CHECK_BATCH)): one round trip, one
/// transaction, one commit for all the renewals in it. A leader's renew joins a batch up to
/// [`Config::renew_early`](leadership_core::Config::renew_early) early (never late), so the
/// set's leaders renew together: 100 leaders at a 2 s interval cost about one statement a
/// second instead of a hundred. Each flag still decides alone, from its own row, exactly as
/// the single check would have answered it. A row another transaction has locked is skipped,
/// failing that flag's check alone (a leader keeps its lease until its deadline, as through
/// any failed renew). A batch that fails or times out is every flag's failure; the connection
/// is replaced only when it is broken or timed out, not for a server's error about the
/// statement. [`FlagSetBuilder::batch`](crate::FlagSetBuilder::batch)`(false)` sends each
/// flag's single check instead.
///
/// The connection lives while the set or any of its flags does.
///
/// ```no_run
/// # async fn demo() -> Result<(), leadership_tokio::Error> {
/// use leadership_tokio::FlagSet;
/// let set = FlagSet::builder("pod-a")
///     .connect_str("host=db user=app")
///     .start(tokio_postgres::NoTls)
///     .await?;
/// let shards: Vec<_> = (0..100)
///     .map(|i| set.add(format!("shard-{i}")))
///     .collect::<Result<_, _>>()?;
/// let leading = shards.iter().filter(|f| f.is_raised()).count();
/// for shard in shards {
///     shard.close().await?;
/// }
/// # Ok(()) }
/// ```
pub struct FlagSet {
    settings: FlagSetBuilder,
    link: Arc<Link>,
    /// Sends the checks of the set's flags that fall due together as one statement; `None`
    /// when the builder turned batches off.
    batcher: Option<Arc<Batcher>>,
    added: AtomicU64,
}

impl std::fmt::Debug for FlagSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlagSet")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl FlagSet {
    /// Starts building a set for process `process`: the same settings as
    /// [`Flag::builder`] (connection, table, interval, metrics, precheck…), shared by every
    /// flag of the set; `start` gives the set (a set's builder cannot build a single flag).
    ///
    /// ```
    /// let builder = leadership_tokio::FlagSet::builder("pod-a");
    /// ```
    pub fn builder(process: impl Into<String>) -> FlagSetBuilder {
        FlagSetBuilder::new(String::new(), process.into())
    }

    pub(crate) fn settings(&self) -> &FlagSetBuilder {
        &self.settings
    }

    pub(crate) fn link(&self) -> &Arc<Link> {
        &self.link
    }

    /// This set's process name.
    pub fn process(&self) -> &str {
        self.settings.process()
    }

    pub(crate) fn new(settings: FlagSetBuilder, link: Arc<Link>) -> FlagSet {
        FlagSet {
            batcher: settings.batches().then(|| Batcher::spawn(link.clone())),
            settings,
            link,
            added: AtomicU64::new(0),
        }
    }

    /// Starts competing for flag `name` on the set's connection. Fails with
    /// [`Error::Config`] for an invalid name, [`Error::DuplicateFlag`] if a flag of that name
    /// added earlier is still running (close or drop it first). Needs to be called within a
    /// tokio runtime.
    ///
    /// ```no_run
    /// # fn demo(set: &leadership_tokio::FlagSet) -> Result<(), leadership_tokio::Error> {
    /// let flag = set.add("shard-7")?;
    /// # Ok(()) }
    /// ```
    pub fn add(&self, name: impl Into<String>) -> Result<Flag, Error> {
        self.add_with(name.into(), None)
    }

    /// [`add`](FlagSet::add), as a shard of a balanced set.
    pub(crate) fn add_with(&self, name: String, shard: Option<Shard>) -> Result<Flag, Error> {
        let n = self.added.fetch_add(1, Ordering::Relaxed);
        // Flags of a set must not share a schedule: spread a given seed, or draw one.
        self.settings.spawn_on(
            &self.link,
            self.batcher.as_ref(),
            &name,
            |seed| match seed {
                Some(seed) => seed.wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                None => random_seed(),
            },
            shard,
        )
    }
}

impl FlagBuilder<Set> {
    /// Whether the set sends the checks of its flags that fall due together as one statement
    /// ([`sql::CHECK_BATCH`](leadership_core::sql::CHECK_BATCH)), on by default: one round
    /// trip, one transaction and one commit for every renewal in it, and a leader's renew may
    /// go up to [`Config::renew_early`](leadership_core::Config::renew_early) early to join
    /// one. Each flag keeps its own decisions and gets its own row, as from the single check;
    /// a row another transaction has locked fails that flag's check alone. Off, each flag
    /// sends the single check, which waits for a locked row.
    ///
    /// ```
    /// let builder = leadership_tokio::FlagSet::builder("pod-a").batch(false);
    /// ```
    pub fn batch(self, on: bool) -> Self {
        self.set_batch(on)
    }

    /// Validates the settings, connects once and makes sure the table is usable, as a flag's
    /// `start` does; flags are added with [`FlagSet::add`] and share that connection.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), leadership_tokio::Error> {
    /// let set = leadership_tokio::FlagSet::builder("pod-a")
    ///     .connect_str("host=db user=app")
    ///     .start(tokio_postgres::NoTls)
    ///     .await?;
    /// let shard = set.add("shard-1")?;
    /// # Ok(()) }
    /// ```
    pub async fn start<T: MakeTls>(mut self, tls: T) -> Result<FlagSet, Error> {
        // The shared settings are checked now; each flag's name when it is added.
        let (_, link) = self.connect_only(tls).await?;
        Ok(FlagSet::new(self, link))
    }
}

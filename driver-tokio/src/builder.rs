//! [`FlagBuilder`]: the core's configuration plus the connection, the table, metrics and the
//! precheck; [`FlagBuilder::start`] connects, makes sure the table is usable and spawns the
//! driver.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use leadership_core::sql::{Statements, Table};
use leadership_core::{Config, ConfigBuilder};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::batch::Batcher;
use crate::connector::Connector;
use crate::error::Error;
use crate::flag::Flag;
use crate::link::Link;
use crate::make_tls::MakeTls;
use crate::observer::{Inspector, Observer};
use crate::parts::{random_seed, Parts, PrecheckFn, Shard};
use crate::pooler::Pooler;
use crate::recorder::Metrics;

impl Flag {
    /// Starts building flag `name` for process `process` (unique among the processes sharing
    /// the flag, e.g. the pod name; empty for [`default_process`](crate::default_process):
    /// host name, pid and a random suffix).
    ///
    /// ```
    /// let builder = leadership_tokio::Flag::builder("nightly-report", "pod-a");
    /// ```
    pub fn builder(name: impl Into<String>, process: impl Into<String>) -> FlagBuilder {
        FlagBuilder::new(name.into(), process.into())
    }
}

/// Builds a [`Flag`]. Every setter of the core's configuration has the Go flag's default
/// (interval 30 s, timeout 1 s, jitter 0.2); see [`leadership_core::Config`].
///
/// ```no_run
/// # async fn demo() -> Result<(), leadership_tokio::Error> {
/// use std::time::Duration;
/// use leadership_tokio::Flag;
/// use tokio_postgres::NoTls;
///
/// let flag = Flag::builder("nightly-report", "pod-a")
///     .connect_str("host=db user=app dbname=app")
///     .interval(Duration::from_secs(10))
///     .metrics_prefix("jobs")
///     .start(NoTls)
///     .await?;
/// if flag.is_raised() { /* do the leader's work */ }
/// flag.close().await?;
/// # Ok(()) }
/// ```
#[must_use]
pub struct FlagBuilder<K = One> {
    /// The core's settings, the flag's name and the process: the one place they are kept
    /// (validated when the flag starts, or each flag of a set is added).
    config: ConfigBuilder,
    connect_timeout: Option<Duration>,
    pooler: Pooler,
    shutdown: Option<CancellationToken>,
    table: Result<Table, Error>,
    metrics_prefix: Option<String>,
    precheck: Option<PrecheckFn>,
    seed: Option<u64>,
    database: Option<Result<tokio_postgres::Config, Error>>,
    /// A set's flags send their checks in batches (on unless [`FlagBuilder::batch`] says
    /// otherwise); a single flag sends the single check.
    batch: bool,
    kind: PhantomData<fn() -> K>,
}

/// What a [`FlagBuilder`] builds: one [`Flag`] (from [`Flag::builder`]).
#[derive(Debug)]
pub enum One {}

/// What a [`FlagBuilder`] builds: a [`FlagSet`](crate::FlagSet) (from [`FlagSet::builder`](crate::FlagSet::builder)), whose `start`
/// gives the set; it cannot build a single flag.
#[derive(Debug)]
pub enum Set {}

/// The builder of a [`FlagSet`](crate::FlagSet): the same settings as a flag's, shared by every flag of the
/// set. Its `start` gives the set; it cannot start a single flag:
///
/// ```compile_fail
/// # async fn demo() -> Result<(), leadership_tokio::Error> {
/// let flag: leadership_tokio::Flag = leadership_tokio::FlagSet::builder("pod-a")
///     .connect_str("host=db")
///     .start(tokio_postgres::NoTls)
///     .await?;
/// # Ok(()) }
/// ```
pub type FlagSetBuilder = FlagBuilder<Set>;

// Never print the connection settings: they may hold a password.
impl<K> fmt::Debug for FlagBuilder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlagBuilder")
            .field("config", &self.config)
            .field("table", &self.table.as_ref().ok())
            .finish_non_exhaustive()
    }
}

/// A process name for when the user gives none: the host name, the pid and a random suffix
/// drawn once per process (`web-7f9c-4121-3fa95c0e`). The suffix is what a restart or a second
/// container cannot share: two containers each the first process of its own PID namespace, with
/// one host name (host networking), are both `<host>-1`, and a process restarted under the same
/// pid would be its own predecessor. Every call in one process returns the same name.
/// [`Flag::builder`] and [`FlagSet::builder`](crate::FlagSet::builder) use it for an empty process name; give an explicit
/// name (the pod name, from the downward API) where an operator should recognise it.
///
/// ```
/// let process = leadership_tokio::default_process();
/// assert!(process.contains(&format!("-{}-", std::process::id())));
/// assert_eq!(process, leadership_tokio::default_process());
/// ```
pub fn default_process() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        format!("{host}-{}-{:08x}", std::process::id(), incarnation())
    })
    .clone()
}

/// 32 random bits for this process: std's `RandomState` keys come from the operating system's
/// random source once per process, so two processes (twins in PID namespaces, or a restart) draw
/// independent values; the clock is mixed in for platforms whose source is weak.
fn incarnation() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    hasher.write_u128(now);
    hasher.write_u32(std::process::id());
    hasher.finish() as u32
}

impl<K> FlagBuilder<K> {
    pub(crate) fn new(name: String, process: String) -> FlagBuilder<K> {
        let process = if process.is_empty() {
            default_process()
        } else {
            process
        };
        FlagBuilder {
            config: Config::builder(name, process),
            connect_timeout: None,
            pooler: Pooler::Auto,
            shutdown: None,
            table: Ok(Table::default()),
            metrics_prefix: None,
            precheck: None,
            seed: None,
            database: None,
            batch: true,
            kind: PhantomData,
        }
    }

    /// The lease (default 30 s): others may take the flag over once the holder has not renewed
    /// it for this long by the database's clock. Every process on a flag must use the same.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let b = leadership_tokio::Flag::builder("report", "pod-a").interval(Duration::from_secs(5));
    /// ```
    pub fn interval(mut self, interval: Duration) -> Self {
        self.config = self.config.interval(interval);
        self
    }

    /// The bound on each statement, including connecting (default 1 s). A statement that takes
    /// longer is abandoned and its connection replaced.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let b = leadership_tokio::Flag::builder("report", "pod-a").timeout(Duration::from_millis(500));
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config = self.config.timeout(timeout);
        self
    }

    /// Randomisation of the schedule, in `[0, 1]` (default 0.2).
    ///
    /// ```
    /// let b = leadership_tokio::Flag::builder("report", "pod-a").jitter(0.1);
    /// ```
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.config = self.config.jitter(jitter);
        self
    }

    /// How much earlier than the lease's end a leader stops believing it leads (default
    /// interval/20); it must exceed the clock drift over one lease.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let b = leadership_tokio::Flag::builder("report", "pod-a").margin(Duration::from_secs(2));
    /// ```
    pub fn margin(mut self, margin: Duration) -> Self {
        self.config = self.config.margin(margin);
        self
    }

    /// How long to wait after a failed statement or a refused precheck (default interval/10).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let b = leadership_tokio::Flag::builder("report", "pod-a").retry_interval(Duration::from_secs(1));
    /// ```
    pub fn retry_interval(mut self, retry: Duration) -> Self {
        self.config = self.config.retry_interval(retry);
        self
    }

    /// How long before the deadline the leader-only work is told to stop when no renew has won
    /// ([`Guard::at_risk`](crate::Guard::at_risk)): give it the time the work needs to stop.
    /// Default: as long as one failed renew allows without putting the lease at risk, at most
    /// interval/4 (see [`leadership_core::Config::stop_ahead`]). A longer one renews earlier.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let b = leadership_tokio::Flag::builder("report", "pod-a")
    ///     .interval(Duration::from_secs(30))
    ///     .stop_ahead(Duration::from_secs(10));
    /// ```
    pub fn stop_ahead(mut self, stop_ahead: Duration) -> Self {
        self.config = self.config.stop_ahead(stop_ahead);
        self
    }

    /// The bound on connecting to each host of the connection string, apart from the statement
    /// timeout (a black-holed first host must not eat the budget of the second). The whole
    /// connection set-up is bounded by this for each host, plus once more. Default: twice the
    /// timeout, or half the lease up to 5 s if that is longer.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let b = leadership_tokio::Flag::builder("report", "pod-a")
    ///     .connect_timeout(Duration::from_secs(3));
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Whether a connection pooler (pgbouncer) sits in between, and of which kind; see
    /// [`Pooler`]. Default: found out.
    ///
    /// ```
    /// let b = leadership_tokio::Flag::builder("report", "pod-a")
    ///     .pooler(leadership_tokio::Pooler::Session);
    /// ```
    pub fn pooler(mut self, pooler: Pooler) -> Self {
        self.pooler = pooler;
        self
    }

    /// Closes the flag (as [`Flag::close`]) when `token` is cancelled: tie it to the service's
    /// shutdown.
    ///
    /// ```
    /// let shutdown = tokio_util::sync::CancellationToken::new();
    /// let b = leadership_tokio::Flag::builder("report", "pod-a").shutdown_on(shutdown.clone());
    /// ```
    pub fn shutdown_on(mut self, token: CancellationToken) -> Self {
        self.shutdown = Some(token);
        self
    }

    /// The table in the connection's `search_path` (default `leadership_flags`, the Go flag's).
    /// Any name is quoted safely; an empty one, one with a NUL or over 63 bytes makes
    /// [`start`](FlagBuilder::start) fail with [`Error::Table`].
    ///
    /// ```
    /// let b = leadership_tokio::Flag::builder("report", "pod-a").table("my flags");
    /// ```
    pub fn table(mut self, name: &str) -> Self {
        self.table = Table::new(name).map_err(Error::from);
        self
    }

    /// The table in a given schema.
    ///
    /// ```
    /// let b = leadership_tokio::Flag::builder("report", "pod-a").table_in_schema("ops", "flags");
    /// ```
    pub fn table_in_schema(mut self, schema: &str, name: &str) -> Self {
        self.table = Table::qualified(schema, name).map_err(Error::from);
        self
    }

    /// Records metrics through the `metrics` crate, named `<prefix>_…` (see
    /// [`metrics`](crate::metrics)); the state gauge is the Go flag's
    /// `<prefix>_leadership_flag_state{name, process}`. Without a prefix nothing is recorded.
    ///
    /// ```
    /// let b = leadership_tokio::Flag::builder("report", "pod-a").metrics_prefix("jobs");
    /// ```
    pub fn metrics_prefix(mut self, prefix: &str) -> Self {
        self.metrics_prefix = Some(prefix.to_string());
        self
    }

    /// A function run before each check: `Ok(true)` lets the check run, `Ok(false)` means "do
    /// not lead now" (a leader lowers), an error is logged and counts as `false`. It is bounded
    /// by the timeout like a statement.
    ///
    /// ```
    /// let b = leadership_tokio::Flag::builder("report", "pod-a")
    ///     .precheck(|| async { Ok::<bool, std::io::Error>(std::path::Path::new("/ready").exists()) });
    /// ```
    pub fn precheck<F, Fut, E>(mut self, precheck: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<bool, E>> + Send + 'static,
        E: fmt::Display + 'static,
    {
        self.precheck = Some(Arc::new(move || {
            let fut = precheck();
            Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
        }));
        self
    }

    /// The seed of the schedule's jitter (default: random). Processes sharing a flag should
    /// not share a seed.
    ///
    /// ```
    /// let b = leadership_tokio::Flag::builder("report", "pod-a").seed(7);
    /// ```
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The database as a libpq-style or URL connection string, e.g. `host=db user=app` or
    /// `postgres://app@db/app`. A string that does not parse makes
    /// [`start`](FlagBuilder::start) fail with [`Error::ConnectString`].
    ///
    /// ```
    /// let b = leadership_tokio::Flag::builder("report", "pod-a")
    ///     .connect_str("postgres://app@db:5432/app");
    /// ```
    pub fn connect_str(mut self, conn: &str) -> Self {
        self.database = Some(tokio_postgres::Config::from_str(conn).map_err(Error::ConnectString));
        self
    }

    /// The database as a `tokio_postgres::Config`. The driver sets `application_name`
    /// (`leadership:<process>`), the connect timeout and `tcp_user_timeout` (the lease) unless
    /// set, and TCP keepalives (every interval/4 after interval/2 idle), so that a dead peer
    /// or a black-holed network fails the socket within about one lease.
    ///
    /// ```
    /// let mut pg = tokio_postgres::Config::new();
    /// pg.host("db").user("app").dbname("app");
    /// let b = leadership_tokio::Flag::builder("report", "pod-a").pg_config(pg);
    /// ```
    pub fn pg_config(mut self, config: tokio_postgres::Config) -> Self {
        self.database = Some(Ok(config));
        self
    }

    /// The metrics of `name` (a flag, or a balanced group) in `process`, with this builder's
    /// prefix (none: nothing is recorded).
    pub(crate) fn metrics(&self, name: &str, process: &str) -> Metrics {
        Metrics::new(self.metrics_prefix.as_deref(), name, process)
    }

    /// Validates the settings (with the builder's name), connects and makes sure the table is
    /// usable.
    pub(crate) async fn connect_only<T: MakeTls>(
        &mut self,
        tls: T,
    ) -> Result<(Config, Arc<Link>), Error> {
        let name = match self.config.name() {
            "" => "flags",
            name => name,
        };
        let config = self.config_for(name)?;
        let table = std::mem::replace(&mut self.table, Ok(Table::default()))?;
        self.table = Ok(table.clone());
        let mut pg = self.database.take().ok_or(Error::NoDatabase)??;
        let connect_timeout = self.connect_timeout_for(&config);
        crate::pg::configure(&mut pg, &config, connect_timeout);
        let link = connect(pg, tls, &table, &config, connect_timeout, self.pooler).await?;
        Ok((config, link))
    }

    fn connect_timeout_for(&self, config: &Config) -> Duration {
        self.connect_timeout
            .unwrap_or_else(|| crate::pg::default_connect_timeout(config))
    }

    /// The process name.
    pub(crate) fn process(&self) -> &str {
        self.config.process()
    }

    /// The core's configuration for flag `name` with these settings.
    pub(crate) fn config_for(&self, name: &str) -> Result<Config, Error> {
        let config = self.config.clone().named(name);
        Ok(config.precheck(self.precheck.is_some()).build()?)
    }

    /// Spawns the driver of flag `name` on `link`, with these settings; `seed` unless the
    /// builder set one.
    pub(crate) fn batches(&self) -> bool {
        self.batch
    }

    pub(crate) fn set_batch(mut self, on: bool) -> Self {
        self.batch = on;
        self
    }

    pub(crate) fn spawn_on(
        &self,
        link: &Arc<Link>,
        batcher: Option<&Arc<Batcher>>,
        name: &str,
        seed: impl FnOnce(Option<u64>) -> u64,
        shard: Option<Shard>,
    ) -> Result<Flag, Error> {
        let config = self.config_for(name)?;
        let notifications = link
            .connector()
            .listen(config.name())
            .ok_or_else(|| Error::DuplicateFlag(name.to_string()))?;
        let metrics = self.metrics(config.name(), config.process());
        let parts = Parts {
            config,
            seed: seed(self.seed),
            link: link.clone(),
            notifications: Some(notifications),
            metrics,
            precheck: self.precheck.clone(),
            shard,
            batch: batcher.map(Batcher::join),
        };
        Ok(Flag::spawn(parts, self.shutdown.clone()))
    }
}

impl FlagBuilder<One> {
    /// Validates the configuration, connects (failing fast with a typed error if it cannot:
    /// unreachable host, refused login), creates the table if it is missing (safe when many
    /// processes start at once) or checks its shape, prepares the statements and spawns the
    /// driver task on the current tokio runtime (which needs its time and I/O drivers, e.g.
    /// `#[tokio::main]` or `Builder::enable_all`). Pass `tokio_postgres::NoTls` for a plain
    /// connection or any `MakeTlsConnect` (e.g. from `postgres-native-tls` or
    /// `tokio-postgres-rustls`).
    ///
    /// After this, database failures are no longer errors: the driver retries and reconnects,
    /// and a leader keeps its lease until its deadline.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), leadership_tokio::Error> {
    /// let flag = leadership_tokio::Flag::builder("report", "pod-a")
    ///     .connect_str("host=db user=app")
    ///     .start(tokio_postgres::NoTls)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn start<T: MakeTls>(self, tls: T) -> Result<Flag, Error> {
        let config = self.config_for(self.config.name())?;
        let connect_timeout = self.connect_timeout_for(&config);
        let metrics = self.metrics(config.name(), config.process());
        let table = self.table?;
        let mut pg = self.database.ok_or(Error::NoDatabase)??;
        crate::pg::configure(&mut pg, &config, connect_timeout);
        let seed = self.seed.unwrap_or_else(random_seed);
        let link = connect(pg, tls, &table, &config, connect_timeout, self.pooler).await?;
        let notifications = link.connector().listen(config.name());
        let parts = Parts {
            config,
            seed,
            link,
            notifications,
            metrics,
            precheck: self.precheck,
            shard: None,
            batch: None,
        };
        Ok(Flag::spawn(parts, self.shutdown))
    }

    /// Connects for an operator's reads and revokes ([`Inspector`]), with these settings
    /// (table, timeouts, pooler; the interval judges expiry), without competing. Creates the
    /// table if it is missing, as [`start`](FlagBuilder::start) does.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), leadership_tokio::Error> {
    /// let inspector = leadership_tokio::Flag::builder("report", "ops")
    ///     .connect_str("host=db user=app")
    ///     .inspect(tokio_postgres::NoTls)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn inspect<T: MakeTls>(mut self, tls: T) -> Result<Inspector, Error> {
        let (config, link) = self.connect_only(tls).await?;
        Ok(Inspector::new(link, config.timeout(), config.interval()))
    }

    /// Watches the builder's flag without competing for it ([`Observer`]): who holds it, and a
    /// receiver that changes when that changes.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), leadership_tokio::Error> {
    /// let observer = leadership_tokio::Flag::builder("report", "dashboard")
    ///     .connect_str("host=db user=app")
    ///     .observe(tokio_postgres::NoTls)
    ///     .await?;
    /// println!("{:?}", observer.holder());
    /// # Ok(()) }
    /// ```
    pub async fn observe<T: MakeTls>(mut self, tls: T) -> Result<Observer, Error> {
        let name = self.config.name().to_string();
        let (config, link) = self.connect_only(tls).await?;
        let notifications = link.connector().listen(&name);
        let inspector = Inspector::new(link, config.timeout(), config.interval());
        Ok(Observer::spawn(inspector, name, &config, notifications))
    }
}

/// Connects once with every step bounded and typed, makes sure the table is usable, and
/// wraps the connection for sharing.
async fn connect<T: MakeTls>(
    pg: tokio_postgres::Config,
    tls: T,
    table: &Table,
    config: &Config,
    connect_timeout: Duration,
    pooler: Pooler,
) -> Result<Arc<Link>, Error> {
    let statements = Arc::new(Statements::new(table));
    let connector = Connector::new(
        pg,
        tls,
        statements,
        config.timeout(),
        connect_timeout,
        pooler,
    );
    let conn = connector.start(table).await?;
    let backoff = Backoff::new(config.retry_interval(), config.interval() / 2);
    let link = Arc::new(Link::new(connector, conn, backoff));
    link.keep_listening();
    Ok(link)
}

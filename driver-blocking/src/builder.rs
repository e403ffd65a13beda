//! [`FlagBuilder`]: the tokio driver's builder, with a blocking precheck and blocking starts.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use leadership_tokio::kind::{One, Set};

use crate::flag::{Flag, FlagSet};
use crate::observer::Observer;
use crate::runtime::Runtime;
use crate::Error;

/// Configures a [`Flag`] or a [`FlagSet`]: the settings of
/// [`leadership_tokio::FlagBuilder`], whose defaults are the Go flag's (interval 30 s, timeout
/// 1 s, jitter 0.2), with a precheck that is a plain function.
///
/// ```no_run
/// use std::time::Duration;
/// use leadership_blocking::Flag;
///
/// let flag = Flag::builder("scheduler", "pod-7")
///     .connect_str("host=db.internal user=scheduler dbname=ops")
///     .interval(Duration::from_secs(20))
///     .table_in_schema("ops", "leadership_flags")
///     .precheck(|| Ok::<_, std::io::Error>(std::path::Path::new("/ready").exists()))
///     .start(postgres::NoTls)?;
/// # drop(flag);
/// # Ok::<(), leadership_blocking::Error>(())
/// ```
#[must_use]
pub struct FlagBuilder<K = One> {
    inner: leadership_tokio::FlagBuilder<K>,
}

/// The builder of a [`FlagSet`]: the same settings as a flag's; its `start` gives the set.
pub type FlagSetBuilder = FlagBuilder<Set>;

impl<K> fmt::Debug for FlagBuilder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl<K> FlagBuilder<K> {
    pub(crate) fn wrap(inner: leadership_tokio::FlagBuilder<K>) -> FlagBuilder<K> {
        FlagBuilder { inner }
    }

    fn map(
        self,
        f: impl FnOnce(leadership_tokio::FlagBuilder<K>) -> leadership_tokio::FlagBuilder<K>,
    ) -> Self {
        FlagBuilder {
            inner: f(self.inner),
        }
    }

    /// Applies what `settings` sets (e.g. read from a file); see
    /// [`leadership_tokio::FlagBuilder::settings`].
    ///
    /// ```
    /// let settings = leadership_blocking::Settings::default();
    /// let builder = leadership_blocking::Flag::builder("report", "").settings(&settings);
    /// ```
    pub fn settings(self, settings: &leadership_tokio::Settings) -> Self {
        self.map(|b| b.settings(settings))
    }

    /// The budget for opening a connection, per host; see
    /// [`leadership_tokio::FlagBuilder::connect_timeout`].
    ///
    /// ```
    /// let b = leadership_blocking::Flag::builder("report", "pod-a")
    ///     .connect_timeout(std::time::Duration::from_secs(3));
    /// ```
    pub fn connect_timeout(self, timeout: Duration) -> Self {
        self.map(|b| b.connect_timeout(timeout))
    }

    /// Whether a connection pooler sits in between, and of which kind (default: found out);
    /// see [`leadership_tokio::FlagBuilder::pooler`].
    ///
    /// ```
    /// use leadership_blocking::Pooler;
    /// let b = leadership_blocking::Flag::builder("report", "pod-a").pooler(Pooler::Transaction);
    /// ```
    pub fn pooler(self, pooler: leadership_tokio::Pooler) -> Self {
        self.map(|b| b.pooler(pooler))
    }

    /// The lease (default 30 s); see [`leadership_tokio::FlagBuilder::interval`].
    pub fn interval(self, interval: Duration) -> Self {
        self.map(|b| b.interval(interval))
    }

    /// The bound on each statement (default 1 s); see
    /// [`leadership_tokio::FlagBuilder::timeout`].
    pub fn timeout(self, timeout: Duration) -> Self {
        self.map(|b| b.timeout(timeout))
    }

    /// Randomisation of the schedule (default 0.2).
    pub fn jitter(self, jitter: f64) -> Self {
        self.map(|b| b.jitter(jitter))
    }

    /// The deadline margin (default interval/20).
    pub fn margin(self, margin: Duration) -> Self {
        self.map(|b| b.margin(margin))
    }

    /// The wait after a failure (default interval/10).
    pub fn retry_interval(self, retry: Duration) -> Self {
        self.map(|b| b.retry_interval(retry))
    }

    /// How long before the deadline the work is told to stop when no renew has won; see
    /// [`leadership_tokio::FlagBuilder::stop_ahead`].
    pub fn stop_ahead(self, stop_ahead: Duration) -> Self {
        self.map(|b| b.stop_ahead(stop_ahead))
    }

    /// The table in the connection's `search_path` (default `leadership_flags`).
    pub fn table(self, name: &str) -> Self {
        self.map(|b| b.table(name))
    }

    /// The table in a given schema.
    pub fn table_in_schema(self, schema: &str, name: &str) -> Self {
        self.map(|b| b.table_in_schema(schema, name))
    }

    /// Records metrics under `<prefix>_…` (see [`leadership_tokio::metrics`]).
    pub fn metrics_prefix(self, prefix: &str) -> Self {
        self.map(|b| b.metrics_prefix(prefix))
    }

    /// The seed of the schedule's jitter (default: random).
    pub fn seed(self, seed: u64) -> Self {
        self.map(|b| b.seed(seed))
    }

    /// The database as a connection string (`host=db user=app` or `postgres://app@db/app`).
    pub fn connect_str(self, conn: &str) -> Self {
        self.map(|b| b.connect_str(conn))
    }

    /// The database as a `tokio_postgres::Config` (the type under `postgres::Config`).
    pub fn pg_config(self, config: tokio_postgres::Config) -> Self {
        self.map(|b| b.pg_config(config))
    }

    /// A function run before each check: `Ok(true)` lets the check run, `Ok(false)` means "do
    /// not lead now" (a leader lowers), an error is logged and counts as `false`. It runs on a
    /// thread of the driver's blocking pool and is bounded by the timeout like a statement (a
    /// call that overruns is abandoned, its thread left to finish).
    ///
    /// ```
    /// let b = leadership_blocking::Flag::builder("report", "pod-a")
    ///     .precheck(|| Ok::<bool, std::io::Error>(std::path::Path::new("/ready").exists()));
    /// ```
    pub fn precheck<F, E>(self, precheck: F) -> Self
    where
        F: Fn() -> Result<bool, E> + Send + Sync + 'static,
        E: fmt::Display + 'static,
    {
        let precheck = Arc::new(move || precheck().map_err(|e| e.to_string()));
        self.map(|b| {
            b.precheck(move || {
                let precheck = precheck.clone();
                async move {
                    tokio::task::spawn_blocking(move || precheck())
                        .await
                        .unwrap_or_else(|e| Err(format!("the precheck panicked: {e}")))
                }
            })
        })
    }
}

impl FlagBuilder<One> {
    /// Validates, connects (failing fast with a typed [`Error`]), makes sure the table is
    /// usable, and starts the driver on a background thread. See
    /// [`leadership_tokio::FlagBuilder::start`]; pass `postgres::NoTls` or any TLS connector.
    ///
    /// ```no_run
    /// let flag = leadership_blocking::Flag::builder("report", "pod-a")
    ///     .connect_str("host=db user=app")
    ///     .start(postgres::NoTls)?;
    /// # Ok::<(), leadership_blocking::Error>(())
    /// ```
    pub fn start<T: leadership_tokio::MakeTls>(self, tls: T) -> Result<Flag, Error> {
        on_runtime(self.inner.start(tls), Flag::wrap)
    }

    /// Watches this builder's flag without competing for it ([`Observer`]); see
    /// [`leadership_tokio::FlagBuilder::observe`].
    ///
    /// ```no_run
    /// let observer = leadership_blocking::Flag::builder("report", "dashboard")
    ///     .connect_str("host=db user=app")
    ///     .observe(postgres::NoTls)?;
    /// println!("{:?}", observer.holder());
    /// # Ok::<(), leadership_blocking::Error>(())
    /// ```
    pub fn observe<T: leadership_tokio::MakeTls>(self, tls: T) -> Result<Observer, Error> {
        on_runtime(self.inner.observe(tls), Observer::wrap)
    }
}

impl FlagBuilder<Set> {
    /// Validates and connects once, as a flag's `start` does; flags are added with [`FlagSet::add`] and share that connection and
    /// thread.
    ///
    /// ```no_run
    /// let set = leadership_blocking::FlagSet::builder("pod-a")
    ///     .connect_str("host=db user=app")
    ///     .start(postgres::NoTls)?;
    /// let shard = set.add("shard-1")?;
    /// # Ok::<(), leadership_blocking::Error>(())
    /// ```
    pub fn start<T: leadership_tokio::MakeTls>(self, tls: T) -> Result<FlagSet, Error> {
        on_runtime(self.inner.start(tls), FlagSet::wrap)
    }

    /// Whether the set sends its flags' checks in batches (on by default); see
    /// [`leadership_tokio::FlagSetBuilder::batch`].
    ///
    /// ```
    /// let builder = leadership_blocking::FlagSet::builder("pod-a").batch(false);
    /// ```
    pub fn batch(self, on: bool) -> Self {
        self.map(|b| b.batch(on))
    }
}

/// Runs one of the tokio builder's starts on a new background runtime, which the handle it
/// gives then owns (`wrap`): every blocking start is this.
fn on_runtime<V, W>(
    start: impl Future<Output = Result<V, leadership_tokio::Error>>,
    wrap: fn(V, Arc<Runtime>) -> W,
) -> Result<W, Error> {
    let runtime = Runtime::start()?;
    let started = runtime.block_on(start)?;
    Ok(wrap(started, runtime))
}

// The handles' builders live here, beside what they build with: the handles need nothing of
// the builder.
impl Flag {
    /// Starts configuring a flag `name` for process `process` (unique among the processes
    /// sharing the flag, e.g. a pod name).
    ///
    /// ```
    /// let builder = leadership_blocking::Flag::builder("nightly-report", "pod-a");
    /// ```
    pub fn builder(name: impl Into<String>, process: impl Into<String>) -> FlagBuilder {
        FlagBuilder::wrap(leadership_tokio::Flag::builder(name, process))
    }
}

impl FlagSet {
    /// Starts building a set for process `process`; finish with
    /// its `start` (a set's builder cannot build a single flag).
    ///
    /// ```
    /// let builder = leadership_blocking::FlagSet::builder("pod-a");
    /// ```
    pub fn builder(process: impl Into<String>) -> FlagSetBuilder {
        FlagBuilder::wrap(leadership_tokio::FlagSet::builder(process))
    }
}

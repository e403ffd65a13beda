//! Configuring and starting a flag.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use leadership_core::sql::{Statements, Table};
use leadership_core::{Config, ConfigBuilder, Flag as Core};
use leadership_tokio::metrics::Metrics;
use leadership_tokio::pg::Tuning;
use postgres::tls::{MakeTlsConnect, TlsConnect};
use postgres::Socket;

use crate::driver::{Driver, PrecheckFn};
use crate::error::Error;
use crate::flag::Flag;
use crate::guard::Signals;
use crate::worker::{Session, Setup};
use leadership_tokio::lease::LeaseCell;

/// Configures a [`Flag`]; every duration defaults to the Go flag's (interval 30 s, timeout
/// 1 s, jitter 0.2).
///
/// ```no_run
/// use std::time::Duration;
/// use leadership_blocking::Flag;
///
/// let mut pg = postgres::Config::new();
/// pg.host("db.internal").user("scheduler").password("secret").dbname("ops");
/// let flag = Flag::builder("scheduler", "pod-7")
///     .interval(Duration::from_secs(20))
///     .table_in_schema("ops", "leadership_flags")
///     .precheck(|| Ok::<_, std::io::Error>(true))
///     .pg_config(pg)
///     .start(postgres::NoTls)?;
/// # drop(flag);
/// # Ok::<(), leadership_blocking::Error>(())
/// ```
#[must_use]
pub struct FlagBuilder {
    config: ConfigBuilder,
    name: String,
    process: String,
    table: (Option<String>, String),
    metrics_prefix: Option<String>,
    precheck: Option<PrecheckFn>,
    seed: Option<u64>,
    pg: Option<Result<postgres::Config, postgres::Error>>,
}

impl FlagBuilder {
    pub(crate) fn new(name: String, process: String) -> FlagBuilder {
        FlagBuilder {
            config: Config::builder(name.clone(), process.clone()),
            name,
            process,
            table: (None, leadership_core::sql::DEFAULT_TABLE.to_string()),
            metrics_prefix: None,
            precheck: None,
            seed: None,
            pg: None,
        }
    }

    /// The lease (default 30 s); every process on one flag, Go ones included, must use the
    /// same.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.config = self.config.interval(interval);
        self
    }

    /// The bound on each statement (default 1 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config = self.config.timeout(timeout);
        self
    }

    /// Randomisation of the schedule, in `[0, 1]` (default 0.2).
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.config = self.config.jitter(jitter);
        self
    }

    /// How much earlier than the lease's end this process stops believing it leads (default
    /// interval/20).
    pub fn margin(mut self, margin: Duration) -> Self {
        self.config = self.config.margin(margin);
        self
    }

    /// How long to wait after a failure (default interval/10).
    pub fn retry_interval(mut self, retry: Duration) -> Self {
        self.config = self.config.retry_interval(retry);
        self
    }

    /// The table, in the connection's `search_path` (default `leadership_flags`).
    pub fn table(mut self, name: &str) -> Self {
        self.table = (None, name.to_string());
        self
    }

    /// The table in a given schema.
    pub fn table_in_schema(mut self, schema: &str, name: &str) -> Self {
        self.table = (Some(schema.to_string()), name.to_string());
        self
    }

    /// Records metrics under this prefix (default: none, as the Go flag without a metrics
    /// subsystem): the state gauge is `<prefix>_leadership_flag_state{name,process}`, as the
    /// Go flag's; the rest are listed in `leadership_tokio::metrics`.
    pub fn metrics_prefix(mut self, prefix: &str) -> Self {
        self.metrics_prefix = Some(prefix.to_string());
        self
    }

    /// A function run before each check: `Ok(false)` or an error lowers the flag and
    /// releases the row. It runs on the driver thread, so it should return quickly; the flag's
    /// deadline is kept even while it runs.
    pub fn precheck<F, E>(mut self, precheck: F) -> Self
    where
        F: Fn() -> Result<bool, E> + Send + 'static,
        E: std::fmt::Display,
    {
        self.config = self.config.precheck(true);
        self.precheck = Some(Box::new(move || precheck().map_err(|e| e.to_string())));
        self
    }

    /// The seed of the schedule's jitter (default: drawn at random).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The database, as a libpq-style connection string or URL.
    pub fn connect_str(mut self, params: &str) -> Self {
        self.pg = Some(params.parse());
        self
    }

    /// The database, as a `postgres::Config`.
    pub fn pg_config(mut self, config: postgres::Config) -> Self {
        self.pg = Some(Ok(config));
        self
    }

    /// Validates the configuration, connects once (failing fast on a bad address, bad
    /// credentials or an unfit table, and within `max(3 × timeout, 2 s)` whatever happens),
    /// creates the table if missing, and starts the driver thread. From then on database
    /// failures are retried, never returned.
    pub fn start<T>(self, tls: T) -> Result<Flag, Error>
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
        T::Stream: Send,
        T::TlsConnect: Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        let config = self.config.build()?;
        let table = match &self.table {
            (Some(schema), name) => Table::qualified(schema, name)?,
            (None, name) => Table::new(name)?,
        };
        let mut pg = self
            .pg
            .ok_or(Error::NoDatabase)?
            .map_err(Error::ConnectString)?;
        tune(&mut pg, &config);
        let (connect_tls, cancel_tls) = (tls.clone(), tls);
        let setup = Arc::new(Setup {
            pg,
            connect: Box::new(move |pg| pg.connect(connect_tls.clone())),
            cancel: Box::new(move |token| {
                let _ = token.cancel_query(cancel_tls.clone());
            }),
            statements: Statements::new(&table),
            name: self.name.clone(),
            process: self.process.clone(),
            interval_micros: config.interval_micros(),
            prefer_requests: AtomicBool::new(false),
        });
        let session = open_bounded(&setup, config.timeout())?;

        let shared = Arc::new(LeaseCell::new());
        let seed = self.seed.unwrap_or_else(random_seed);
        let (timeout, interval) = (config.timeout(), config.interval());
        let core = Core::new(config, seed, shared.now());
        let (tx, rx) = mpsc::channel();
        let signals = Arc::new(Signals::new(Arc::clone(&shared), tx.clone()));
        let metrics = Metrics::new(self.metrics_prefix.as_deref(), &self.name, &self.process);
        let mut driver = Driver::new(
            core,
            (Arc::clone(&shared), Arc::clone(&signals)),
            setup,
            rx,
            tx.clone(),
            self.precheck,
            metrics,
        );
        driver.adopt(session).map_err(Error::Spawn)?;
        let thread = std::thread::Builder::new()
            .name("leadership".into())
            .spawn(move || driver.run())
            .map_err(Error::Spawn)?;
        Ok(Flag {
            shared,
            signals,
            tx,
            thread: Some(thread),
            timeout,
            interval,
        })
    }
}

/// Opens the first connection on a helper thread, so that a server that accepts connections
/// but then hangs (or a lock held on the table) cannot block `start` for ever. The bound is a
/// few statement timeouts (connecting, then about six short statements), at least 2 s so that
/// a busy machine does not fail a healthy start.
fn open_bounded(setup: &Arc<Setup>, timeout: Duration) -> Result<Session, Error> {
    let bound = (timeout * 3).max(Duration::from_secs(2));
    let (tx, rx) = mpsc::sync_channel(1);
    let setup = Arc::clone(setup);
    std::thread::Builder::new()
        .name("leadership-start".into())
        .spawn(move || {
            // If nobody waits any more, the session is dropped here and its connection closed.
            let _ = tx.send(Session::open(&setup));
        })
        .map_err(Error::Spawn)?;
    rx.recv_timeout(bound).map_err(|_| Error::Timeout {
        what: "connecting and checking the table",
        after: bound,
    })?
}

/// Applies the drivers' shared [`Tuning`] to a `postgres::Config`, keeping what the caller set:
/// a name to find the backend by, a connect timeout, and TCP settings that make a dead peer or a
/// black-holed network fail the socket within about one lease.
fn tune(pg: &mut postgres::Config, config: &Config) {
    // The policy is shared with the tokio driver; only the configuration type differs.
    let t = Tuning::for_config(config);
    if pg.get_application_name().is_none() {
        pg.application_name(&t.application_name);
    }
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(t.connect_timeout);
    }
    if pg.get_tcp_user_timeout().is_none() {
        pg.tcp_user_timeout(t.tcp_user_timeout);
    }
    pg.keepalives(true);
    pg.keepalives_idle(t.keepalives_idle);
    if pg.get_keepalives_interval().is_none() {
        pg.keepalives_interval(t.keepalives_interval);
    }
    if pg.get_keepalives_retries().is_none() {
        pg.keepalives_retries(t.keepalives_retries);
    }
}

fn random_seed() -> u64 {
    // RandomState is seeded from the OS per process and per instance.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use leadership_core::sql::TableError;
    use leadership_core::ConfigError;

    #[test]
    fn tune_names_the_backend_and_bounds_the_socket_but_keeps_what_the_caller_set() {
        let config = Config::builder("n", "é".repeat(40))
            .interval(Duration::from_secs(2))
            .build()
            .unwrap();
        let mut pg = postgres::Config::new();
        tune(&mut pg, &config);
        let name = pg.get_application_name().unwrap();
        assert!(
            name.starts_with("leadership:é") && name.len() <= 63,
            "{name}"
        );
        assert_eq!(pg.get_connect_timeout(), Some(&Duration::from_secs(1)));
        assert_eq!(pg.get_tcp_user_timeout(), Some(&Duration::from_secs(2)));
        assert!(pg.get_keepalives());

        let mut pg: postgres::Config = "application_name=mine connect_timeout=7".parse().unwrap();
        tune(&mut pg, &config);
        assert_eq!(pg.get_application_name(), Some("mine"));
        assert_eq!(pg.get_connect_timeout(), Some(&Duration::from_secs(7)));
    }

    #[test]
    fn start_refuses_bad_configuration_before_touching_the_network() {
        let start = |b: FlagBuilder| b.start(postgres::NoTls).map(drop).unwrap_err();
        assert!(matches!(
            start(Flag::builder("", "p").connect_str("host=192.0.2.1")),
            Error::Config(ConfigError::Empty { field: "name" })
        ));
        assert!(matches!(
            start(
                Flag::builder("n", "p")
                    .table_in_schema("s", "")
                    .connect_str("host=192.0.2.1")
            ),
            Error::Table(TableError::Empty)
        ));
        assert!(matches!(start(Flag::builder("n", "p")), Error::NoDatabase));
        assert!(matches!(
            start(Flag::builder("n", "p").connect_str("port=notaport")),
            Error::ConnectString(_)
        ));
    }
}

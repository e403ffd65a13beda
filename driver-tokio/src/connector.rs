//! [`Connector`]: opening connections with the user's settings and TLS (asking the server for
//! its own statement and lock timeouts where it takes them), setting each up (what the server
//! is, the table, the statements, `LISTEN`), and routing notifications to the flags by name.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use leadership_core::sql::{Statements, Table, PROMOTED_AGO, READ_ONLY, SERVER};
use leadership_core::Server;
use tokio::sync::mpsc;
use tokio_postgres::types::Type;
use tokio_postgres::{AsyncMessage, CancelToken, Client};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::connection::{check_text, Conn, Prepared, Task, CHECK_TYPES};
use crate::error::Error;
use crate::make_tls::MakeTls;
use crate::pg::PgTime;
use crate::pooler::{self, Pooler, Route};
use crate::schema::{bounded, ensure_table, schema_of};

type Connecting =
    Pin<Box<dyn Future<Output = Result<(Client, Task), tokio_postgres::Error>> + Send>>;
type Cancelling = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The flags listening through one connector, by name: a notification's payload is the name
/// of the released flag. Each entry holds one pending wake-up at most (more would say nothing
/// new), so a flood of releases cannot grow memory; a dropped one only costs time.
type Routes = Arc<Mutex<HashMap<String, mpsc::Sender<()>>>>;

/// Opens connections with the user's settings and TLS; the TLS type is erased here so the
/// driver is not generic. Every connection it opens routes its notifications to the flags
/// registered with [`Connector::listen`].
#[derive(Clone)]
pub(crate) struct Connector {
    /// Connects; with `true`, asking the server for its own statement and lock timeouts in the
    /// startup packet (`options`), which a pooler refuses.
    connect: Arc<dyn Fn(bool) -> Connecting + Send + Sync>,
    cancel: Arc<dyn Fn(CancelToken) -> Cancelling + Send + Sync>,
    statements: Arc<Statements>,
    /// The bound on connecting and setting a connection up: the connect timeout for each host,
    /// plus one for the rest of the set-up.
    connect_budget: Duration,
    routes: Routes,
    /// How statements reach the server: asked for, or learned (see [`Pooler`]).
    route: Arc<Mutex<Route>>,
    pooler: Pooler,
    ids: Arc<AtomicU64>,
    /// Whether the table has the term column, as found at start-up (assumed until then).
    term: Arc<AtomicBool>,
    /// The statements with the table named by its schema as found at start-up, for fences
    /// run on other sessions (whose `search_path` may differ).
    qualified: Arc<OnceLock<Arc<Statements>>>,
    /// The host list, `host:port`, for messages.
    servers: Arc<str>,
}

/// The connection settings the driver adds to the user's: the server's `statement_timeout` and
/// `lock_timeout` set to the statement timeout, so the server abandons what the client
/// abandoned, and `jit = off` (unless the user set `options` themselves). The driver's
/// statements are small and never gain from JIT compilation, while the planner's estimates for
/// a batch of thousands of flags ([`sql::CHECK_BATCH`](leadership_core::sql::CHECK_BATCH))
/// run so high that compiling it took 1.1–1.4 s, past the 1 s timeout, failing every flag of
/// the batch.
fn with_server_timeouts(pg: &tokio_postgres::Config, timeout: Duration) -> tokio_postgres::Config {
    let mut pg = pg.clone();
    let ms = timeout.as_millis().max(1);
    let ours = format!("-c statement_timeout={ms} -c lock_timeout={ms} -c jit=off");
    let options = match pg.get_options() {
        Some(theirs) if theirs.contains("statement_timeout") => theirs.to_string(),
        Some(theirs) => format!("{theirs} {ours}"),
        None => ours,
    };
    pg.options(&options);
    pg
}

impl Connector {
    pub(crate) fn new<T: MakeTls>(
        pg: tokio_postgres::Config,
        tls: T,
        statements: Arc<Statements>,
        timeout: Duration,
        connect_timeout: Duration,
        pooler: Pooler,
    ) -> Connector {
        let hosts = u32::try_from(pg.get_hosts().len().max(1)).unwrap_or(u32::MAX);
        let servers: Arc<str> = crate::pg::servers(&pg).into();
        let plain = Arc::new(pg.clone());
        let timed = Arc::new(with_server_timeouts(&pg, timeout));
        let routes = Routes::default();
        let forward = routes.clone();
        let connect_tls = tls.clone();
        let connect = move |server_timeouts: bool| -> Connecting {
            let pg = if server_timeouts {
                timed.clone()
            } else {
                plain.clone()
            };
            let (tls, forward) = (connect_tls.clone(), forward.clone());
            Box::pin(async move {
                let (client, mut connection) = pg.connect(tls).await?;
                let closed = CancellationToken::new();
                let ended = closed.clone().drop_guard();
                // The connection task drives the socket. `connection.await` would drop
                // notifications; polling messages hands them to the driver instead.
                let handle = tokio::spawn(async move {
                    // Dropped when the task ends or is aborted.
                    let _ended = ended;
                    loop {
                        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                            Some(Ok(AsyncMessage::Notification(n))) => route(&forward, n.payload()),
                            Some(Ok(_)) => {}
                            Some(Err(error)) => {
                                debug!(error = %crate::pg::Chain(&error), "connection closed");
                                break;
                            }
                            None => break,
                        }
                    }
                });
                Ok((client, Task { handle, closed }))
            })
        };
        let cancel = move |token: CancelToken| -> Cancelling {
            let tls = tls.clone();
            Box::pin(async move {
                if let Err(e) = token.cancel_query(tls).await {
                    debug!(error = %crate::pg::Chain(&e), "cancelling an abandoned statement failed");
                }
            })
        };
        Connector {
            connect: Arc::new(connect),
            cancel: Arc::new(cancel),
            statements,
            connect_budget: connect_timeout.saturating_mul(hosts.saturating_add(1)),
            routes,
            route: Arc::new(Mutex::new(pooler.initial_route())),
            pooler,
            ids: Arc::new(AtomicU64::new(0)),
            term: Arc::new(AtomicBool::new(true)),
            qualified: Arc::new(OnceLock::new()),
            servers,
        }
    }

    /// Registers flag `name` for notifications: the receiver gets a wake-up whenever a
    /// release of that flag is notified on any connection of this connector. `None` if a
    /// running flag already listens under that name (one connection, one name, one flag).
    /// Closes `conn`'s socket now: statements of other flags in flight on it fail at once
    /// rather than at their timeouts, and retry on a new connection. The statement that was
    /// abandoned is cancelled on the server too (direct connections), so that it cannot commit
    /// later: a zombie renew would hand the closed process a fresh lease.
    pub(crate) fn abandon(&self, conn: &Conn) {
        if let Some(token) = conn.cancel_token() {
            tokio::spawn((self.cancel)(token.clone()));
        }
        conn.close_now();
    }

    pub(crate) fn listen(&self, name: &str) -> Option<mpsc::Receiver<()>> {
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        if routes.get(name).is_some_and(|tx| !tx.is_closed()) {
            return None;
        }
        let (tx, rx) = mpsc::channel(1);
        routes.insert(name.to_string(), tx);
        Some(rx)
    }

    pub(crate) fn statements(&self) -> &Statements {
        &self.statements
    }

    /// The statements with the table qualified by its schema (as found at start-up), for the
    /// fence; the configured ones if it was not found.
    pub(crate) fn qualified_statements(&self) -> Arc<Statements> {
        self.qualified
            .get()
            .cloned()
            .unwrap_or_else(|| self.statements.clone())
    }

    /// The bound on opening a connection (every host of the list in turn, and the set-up).
    pub(crate) fn connect_budget(&self) -> Duration {
        self.connect_budget
    }

    /// The host list, `host:port`, for messages.
    pub(crate) fn servers(&self) -> &str {
        &self.servers
    }

    pub(crate) fn route(&self) -> Route {
        *self.route.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A statement failed in a way only a transaction pooler causes (a prepared statement that
    /// another client's session already has, or that this one's server connection lacks): from
    /// now on, unnamed statements and no `LISTEN`.
    pub(crate) fn learned_transaction_pooling(&self, error: &tokio_postgres::Error) -> bool {
        if !pooler::is_transaction_pooling(error) || self.pooler != Pooler::Auto {
            return false;
        }
        let mut route = self.route.lock().unwrap_or_else(PoisonError::into_inner);
        if *route != Route::Transaction {
            *route = Route::Transaction;
            pooler::log_route(
                Route::Transaction,
                "a prepared statement was not where it was prepared",
            );
        }
        true
    }

    /// Connects, asking for the server's own timeouts where the route allows; behind a pooler
    /// that refuses them (`options`), learns the pooler and connects again without.
    async fn connect(&self) -> Result<(Client, Task), tokio_postgres::Error> {
        let route = self.route();
        match (self.connect)(route == Route::Direct).await {
            Err(e) if route == Route::Direct && pooler::refused_options(&e) => {
                match self.pooler {
                    // Told it is direct: the error says what to set.
                    Pooler::Direct => Err(e),
                    _ => {
                        let (client, task) = (self.connect)(false).await?;
                        let learned = pooler::probe(&client, || (self.connect)(false)).await;
                        *self.route.lock().unwrap_or_else(PoisonError::into_inner) = learned;
                        pooler::log_route(
                            learned,
                            "the server refused the startup parameter `options`",
                        );
                        Ok((client, task))
                    }
                }
            }
            other => other,
        }
    }

    /// Prepares (or not), listens (or not) and learns what the server is, on a connection;
    /// the connection's task is aborted if that fails.
    async fn set_up(&self, client: Client, task: Task) -> Result<Conn, tokio_postgres::Error> {
        let task = SetUpGuard(Some(task));
        let route = self.route();
        let named = route != Route::Transaction;
        let term = self.term.load(Ordering::Relaxed);
        // Pipelined: the exchanges share the round trips.
        let (check, release, listen, server) = tokio::join!(
            async {
                match named {
                    true => client
                        .prepare_typed(check_text(&self.statements, term), &CHECK_TYPES)
                        .await
                        .map(Some),
                    false => Ok(None),
                }
            },
            async {
                match named {
                    true => client.prepare(&self.statements.release).await.map(Some),
                    false => Ok(None),
                }
            },
            async {
                match named {
                    // A transaction pooler would deliver notifications to whoever shares the
                    // server connection next, not to us: the lease schedule has to do.
                    true => client.batch_execute(&self.statements.listen).await,
                    false => Ok(()),
                }
            },
            // Unnamed, like every set-up statement: see `schema`.
            client.query_typed_one(SERVER, &[]),
        );
        listen?;
        let prepared = match (check?, release?) {
            (Some(check), Some(release)) => Prepared::Named { check, release },
            _ => Prepared::Unnamed,
        };
        let server = server?;
        let timeline: Option<i32> = server.try_get("timeline")?;
        let promoting: bool = server.try_get("promoting")?;
        let promoted_ago = if promoting {
            Some(Duration::ZERO)
        } else if server.try_get::<_, bool>("can_list_wal")? && timeline.is_some_and(|t| t > 1) {
            let row = client
                .query_typed_one(PROMOTED_AGO, &[(&timeline, Type::INT4)])
                .await?;
            row.try_get::<_, Option<i64>>(0)?
                .and_then(|us| u64::try_from(us).ok())
                .map(Duration::from_micros)
        } else {
            None
        };
        let server = Server {
            system: server
                .try_get::<_, Option<String>>("system")?
                .and_then(|s| s.parse().ok()),
            timeline: timeline.and_then(|t| u32::try_from(t).ok()),
            started: server.try_get::<_, Option<PgTime>>("started")?.map(|t| t.0),
            durable: server.try_get("durable")?,
            promoted_ago,
        };
        let cancel = (route == Route::Direct).then(|| client.cancel_token());
        Ok(Conn {
            id: self.ids.fetch_add(1, Ordering::Relaxed) + 1,
            client,
            server,
            statements: self.statements.clone(),
            term,
            prepared,
            cancel,
            task: task.take(),
        })
    }

    /// Connects and sets up, unbounded: the caller bounds it by the connect budget.
    pub(crate) async fn open(&self) -> Result<Conn, tokio_postgres::Error> {
        let (client, task) = self.connect().await?;
        self.set_up(client, task).await
    }

    /// The first connection, at start-up: every step bounded by the connect budget and failing
    /// with a typed error that names the budget, and the table created or checked.
    pub(crate) async fn start(&self, table: &Table) -> Result<Conn, Error> {
        let budget = self.connect_budget;
        let (mut client, task) = match tokio::time::timeout(budget, self.connect()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) if pooler::refused_options(&e) => {
                return Err(Error::PoolerRefusedOptions(e));
            }
            Ok(Err(e)) if crate::pg::is_read_only_server(&e) => {
                return Err(Error::ReadOnly {
                    servers: self.servers.to_string(),
                    source: e,
                });
            }
            Ok(Err(e)) => return Err(Error::from_connect(e)),
            Err(_) => {
                return Err(Error::Timeout {
                    what: "connecting",
                    after: budget,
                    setting: "connect_timeout",
                })
            }
        };
        // From here on, `task` must not outlive a failure: wrap it at once.
        let guard = SetUpGuard(Some(task));
        // Only here, once: on every reconnect this round trip would cost the lease's time (a
        // host list asks the server itself, through target_session_attrs).
        let read_only: bool = bounded("asking whether the server takes writes", budget, async {
            client.query_typed_one(READ_ONLY, &[]).await
        })
        .await?
        .get(0);
        if read_only {
            return Err(Error::ReadOnlyServer {
                servers: self.servers.to_string(),
            });
        }
        debug!(table = %table.quoted(), "connected; checking the table");
        let shape = ensure_table(&mut client, &self.statements, budget).await?;
        self.term.store(shape.term, Ordering::Relaxed);
        if let Some(schema) = schema_of(&client, &self.statements, budget).await? {
            let qualified = Table::qualified(&schema, table.name()).map_err(Error::Table)?;
            let _ = self.qualified.set(Arc::new(Statements::new(&qualified)));
        }
        let task = guard.take();
        let conn = bounded(
            "preparing the statements",
            budget,
            self.set_up(client, task),
        )
        .await?;
        if conn.server.promoted_ago.is_some() || conn.server.timeline.is_some_and(|t| t > 1) {
            info!(timeline = ?conn.server.timeline, promoted_ago = ?conn.server.promoted_ago, "connected to a promoted server");
        }
        Ok(conn)
    }
}

/// Wakes the flag a notification names, if it listens here. Full: a wake-up is pending
/// already. Closed: its driver is gone, forget it.
fn route(routes: &Routes, payload: &str) {
    let mut routes = routes.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(tx) = routes.get(payload) {
        if let Err(mpsc::error::TrySendError::Closed(())) = tx.try_send(()) {
            routes.remove(payload);
        }
    }
}

/// Aborts the connection task when a set-up step fails, so it never outlives a failure (unlike
/// `tokio_util`'s `AbortOnDropHandle`, it also holds the task's closed token, and is taken, not
/// detached, once set-up succeeded).
struct SetUpGuard(Option<Task>);

impl SetUpGuard {
    fn take(mut self) -> Task {
        self.0.take().expect("taken once")
    }
}

impl Drop for SetUpGuard {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connector() -> Connector {
        let table = Table::default();
        Connector::new(
            tokio_postgres::Config::new(),
            tokio_postgres::NoTls,
            Arc::new(Statements::new(&table)),
            Duration::from_secs(1),
            Duration::from_secs(2),
            Pooler::Auto,
        )
    }

    #[test]
    fn notifications_wake_only_the_flag_they_name_and_coalesce() {
        let c = connector();
        let mut a = c.listen("a").unwrap();
        let mut b = c.listen("b").unwrap();
        assert!(c.listen("a").is_none(), "one running flag per name");
        route(&c.routes, "a");
        route(&c.routes, "a");
        route(&c.routes, "other-flag");
        assert_eq!(a.try_recv(), Ok(()));
        assert!(a.try_recv().is_err(), "one pending wake-up says it all");
        assert!(b.try_recv().is_err());
        // A closed flag's name is free again, and its route forgotten.
        drop(b);
        route(&c.routes, "b");
        assert!(!c.routes.lock().unwrap().contains_key("b"));
        assert!(c.listen("b").is_some());
    }

    #[test]
    fn the_server_is_asked_for_its_own_timeouts_unless_the_user_set_them() {
        let mut pg = tokio_postgres::Config::new();
        let timed = with_server_timeouts(&pg, Duration::from_millis(750));
        assert_eq!(
            timed.get_options(),
            Some("-c statement_timeout=750 -c lock_timeout=750 -c jit=off")
        );
        pg.options("-c search_path=ops");
        let timed = with_server_timeouts(&pg, Duration::from_millis(750));
        assert_eq!(
            timed.get_options(),
            Some("-c search_path=ops -c statement_timeout=750 -c lock_timeout=750 -c jit=off")
        );
        pg.options("-c statement_timeout=5s");
        let timed = with_server_timeouts(&pg, Duration::from_millis(750));
        assert_eq!(timed.get_options(), Some("-c statement_timeout=5s"));
    }
}

//! Connection poolers between the driver and the server ([`Pooler`]): what works behind them,
//! and how the driver tells.
//!
//! Behind pgbouncer in *transaction* pooling, every transaction may run on another server
//! connection: a prepared statement lives on one of them (named statements collide between
//! clients, `prepared statement "s0" already exists`, or are missing, `… does not exist`), a
//! notification reaches whoever uses the listening server connection next (so `LISTEN` is
//! useless), and session settings do not stick. In *session* pooling a client keeps one
//! server connection, so all of that works. Both refuse the startup parameter `options` (the
//! server's own statement and lock timeouts), and a cancel sent the way tokio-postgres sends
//! it can make pgbouncer 1.18 drop it, or crash.

use std::future::Future;

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;
use tracing::warn;

/// Whether a connection pooler sits between this process and PostgreSQL, and of which kind.
/// Set it with [`FlagBuilder::pooler`](crate::FlagBuilder::pooler) when known; the default
/// finds out.
///
/// | | prepared statements | `LISTEN` (handover in ms) | server-side timeouts | cancel of abandoned statements |
/// |---|---|---|---|---|
/// | `Direct` | yes | yes | `statement_timeout`, `lock_timeout` = the timeout | yes |
/// | `Session` | yes | yes | set them on the role (`ALTER ROLE … SET statement_timeout`) | no |
/// | `Transaction` | unnamed (one round trip, planned each time) | no: handover waits for the lease | on the role | no |
///
/// ```
/// let b = leadership_tokio::Flag::builder("report", "pod-a")
///     .pooler(leadership_tokio::Pooler::Transaction);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Pooler {
    /// Find out (the default): connect asking for the server's own timeouts; a refusal of that
    /// startup parameter means a pooler (pgbouncer), whose pooling mode is then probed with a
    /// second connection; a prepared statement found missing or taken later means transaction
    /// pooling. One log line says what was found.
    #[default]
    Auto,
    /// Straight to PostgreSQL: a refusal of the startup parameter `options` fails the start
    /// with an error naming this setting.
    Direct,
    /// Behind a pooler in session pooling (a client keeps its server connection).
    Session,
    /// Behind a pooler in transaction pooling (pgbouncer's most common mode).
    Transaction,
}

/// What the connector does, asked for or learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Direct,
    Session,
    Transaction,
}

impl Pooler {
    pub(crate) fn initial_route(self) -> Route {
        match self {
            Pooler::Auto | Pooler::Direct => Route::Direct,
            Pooler::Session => Route::Session,
            Pooler::Transaction => Route::Transaction,
        }
    }
}

/// Whether the server refused the startup parameter `options`: pgbouncer's `unsupported
/// startup parameter: options` (SQLSTATE 08P01).
pub(crate) fn refused_options(error: &tokio_postgres::Error) -> bool {
    error.code() == Some(&SqlState::PROTOCOL_VIOLATION)
        && error
            .as_db_error()
            .is_some_and(|e| e.message().contains("unsupported startup parameter"))
}

/// Whether a statement failed the way only transaction pooling makes it fail: a named
/// prepared statement that this server connection already has from another client (42P05)
/// or lacks (26000).
pub(crate) fn is_transaction_pooling(error: &tokio_postgres::Error) -> bool {
    error.code().is_some_and(|c| {
        *c == SqlState::DUPLICATE_PSTATEMENT || *c == SqlState::INVALID_SQL_STATEMENT_NAME
    })
}

/// Tells session pooling from transaction pooling behind a pooler. `client` is a connection
/// through it; `connect` opens a second, `other`. In session pooling each client has a server
/// connection of its own for its whole session: `other` always sees the same backend, and
/// `client` never sees that one. In transaction pooling a server connection goes back to the
/// pool after each transaction: `client`, taking one and holding it in a transaction, gets the
/// one `other` just let go (pgbouncer reuses the most recently released), and `other` then has
/// to run on another, or, once `client` lets go, on `client`'s. Either shows transaction
/// pooling. Other clients of the pooler may take those connections in between, which hides it
/// in one round (measured: one process in five misdetected when five started at once with a
/// single round), so session pooling is concluded only after several rounds that all agree. A
/// failure of the probe assumes transaction pooling, which works everywhere (only slower to
/// hand over).
pub(crate) async fn probe<F, Fut, T>(client: &Client, connect: F) -> Route
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(Client, T), tokio_postgres::Error>>,
{
    const ROUNDS: usize = 3;
    let probe = async {
        let (other, _task) = connect().await?;
        let backend = |messages: Vec<tokio_postgres::SimpleQueryMessage>| first_value(&messages);
        let mut others = None;
        for _ in 0..ROUNDS {
            let before = backend(other.simple_query("SELECT pg_backend_pid()").await?);
            // `client` takes a server connection and holds it.
            let held = backend(
                client
                    .simple_query("BEGIN; SELECT pg_backend_pid()")
                    .await?,
            );
            let during = backend(other.simple_query("SELECT pg_backend_pid()").await?);
            client.batch_execute("COMMIT").await?;
            let after = backend(
                other
                    .simple_query("BEGIN; SELECT pg_backend_pid(); COMMIT")
                    .await?,
            );
            let same = before.is_some()
                && held != before
                && during == before
                && after == before
                && others.as_ref().is_none_or(|o| *o == before);
            if !same {
                return Ok::<_, tokio_postgres::Error>(Route::Transaction);
            }
            others = Some(before);
        }
        Ok(Route::Session)
    };
    probe.await.unwrap_or(Route::Transaction)
}

fn first_value(messages: &[tokio_postgres::SimpleQueryMessage]) -> Option<String> {
    messages.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
        _ => None,
    })
}

/// The one log line that says how statements reach the server behind a pooler.
pub(crate) fn log_route(route: Route, why: &str) {
    match route {
        Route::Transaction => warn!(
            why,
            "connected through a connection pooler in transaction pooling: statements are \
             unnamed, LISTEN is off (a handover waits for the lease to expire), and the server's \
             statement_timeout is not set per connection (set it on the role); set \
             pooler(Pooler::Session) if it pools by session"
        ),
        Route::Session => warn!(
            why,
            "connected through a connection pooler in session pooling: the server's \
             statement_timeout is not set per connection (set it on the role)"
        ),
        Route::Direct => {}
    }
}

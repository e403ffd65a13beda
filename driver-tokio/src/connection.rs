//! The driver's connections: connecting (with the server's own statement and lock timeouts
//! where the server takes them), learning what the server is ([`Server`]), preparing the two
//! statements or running them unnamed behind a transaction pooler, `LISTEN`, and the
//! connection task, which routes notifications to the flags by name.

use std::sync::Arc;

use leadership_core::sql::Statements;
use leadership_core::{Identity, Server};
use tokio::task::JoinHandle;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{CancelToken, Client, Statement};
use tokio_util::sync::CancellationToken;

use crate::pg::PgTime;

/// How a connection runs the check and the release: prepared once (one Bind/Execute round
/// trip each), or unnamed behind a transaction pooler, where a prepared statement lives on one
/// server connection and the next transaction may run on another (still one round trip:
/// Parse/Bind/Execute pipelined, at the cost of planning each time).
pub(crate) enum Prepared {
    Named {
        check: Statement,
        release: Statement,
    },
    Unnamed,
}

/// A live connection: its number (the driver tells the core about each new one), what the
/// server said about itself, and its statements.
pub(crate) struct Conn {
    pub(crate) id: u64,
    pub(crate) client: Client,
    pub(crate) server: Server,
    pub(crate) statements: Arc<Statements>,
    /// Whether the table has the term column: which text of the check this connection runs.
    pub(crate) term: bool,
    pub(crate) prepared: Prepared,
    /// How to cancel a statement abandoned on this connection; `None` behind a pooler (a
    /// pgbouncer 1.18 may drop, or even crash on, a cancel sent the way tokio-postgres sends
    /// it; there the role's own `statement_timeout` has to end zombies).
    pub(crate) cancel: Option<CancelToken>,
    pub(crate) task: Task,
}

/// The task that drives a connection's socket, and a token cancelled when it ends (the server
/// closed the connection, or the task was aborted).
pub(crate) struct Task {
    pub(crate) handle: JoinHandle<()>,
    pub(crate) closed: CancellationToken,
}

impl Task {
    pub(crate) fn abort(&self) {
        self.handle.abort();
    }
}

/// The text of the check for a table with or without the term column.
pub(crate) fn check_text(statements: &Statements, term: bool) -> &str {
    match term {
        true => &statements.check,
        false => &statements.check_without_term,
    }
}

/// The check's parameters, in the order of [`sql::CHECK`](leadership_core::sql::CHECK).
pub(crate) struct CheckParams<'a> {
    pub(crate) name: &'a str,
    pub(crate) process: &'a str,
    pub(crate) renew: Option<i64>,
    pub(crate) lease_micros: i64,
    pub(crate) floor: i64,
    pub(crate) may_take: bool,
    pub(crate) may_insert: bool,
    pub(crate) continues: Option<i64>,
    /// The server the core expects: `$9`, `$10`, `$11`.
    pub(crate) expect: Option<Identity>,
}

/// The check's parameter types: given when it is prepared, so that both texts (with and
/// without the term column) are typed alike.
pub const CHECK_TYPES: [Type; 11] = [
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::BOOL,
    Type::BOOL,
    Type::INT8,
    Type::TEXT,
    Type::INT4,
    Type::TIMESTAMPTZ,
];

/// The batched check's parameters: one element per flag in each array, in one order.
pub(crate) struct BatchParams<'a> {
    pub(crate) names: Vec<&'a str>,
    pub(crate) process: &'a str,
    pub(crate) renew: Vec<Option<i64>>,
    pub(crate) lease_micros: i64,
    pub(crate) floor: Vec<i64>,
    pub(crate) may_take: Vec<bool>,
    pub(crate) may_insert: Vec<bool>,
    pub(crate) continues: Vec<Option<i64>>,
    pub(crate) expect: Option<Identity>,
}

impl Conn {
    /// Runs the check: one round trip, one row.
    pub(crate) async fn check(
        &self,
        p: &CheckParams<'_>,
    ) -> Result<tokio_postgres::Row, tokio_postgres::Error> {
        let (system, timeline, started) = expected(p.expect);
        let params: [(&(dyn ToSql + Sync), Type); 11] = [
            (&p.name, CHECK_TYPES[0].clone()),
            (&p.process, CHECK_TYPES[1].clone()),
            (&p.renew, CHECK_TYPES[2].clone()),
            (&p.lease_micros, CHECK_TYPES[3].clone()),
            (&p.floor, CHECK_TYPES[4].clone()),
            (&p.may_take, CHECK_TYPES[5].clone()),
            (&p.may_insert, CHECK_TYPES[6].clone()),
            (&p.continues, CHECK_TYPES[7].clone()),
            (&system, CHECK_TYPES[8].clone()),
            (&timeline, CHECK_TYPES[9].clone()),
            (&started, CHECK_TYPES[10].clone()),
        ];
        match &self.prepared {
            Prepared::Named { check, .. } => self.client.query_one(check, &values(&params)).await,
            Prepared::Unnamed => {
                self.client
                    .query_typed_one(check_text(&self.statements, self.term), &params)
                    .await
            }
        }
    }

    /// Runs the batched check ([`sql::CHECK_BATCH`](leadership_core::sql::CHECK_BATCH)): one
    /// round trip, one row per flag. Unnamed: it is planned each time, which a batch of many
    /// flags amortizes, and it runs the same way behind a transaction pooler.
    pub(crate) async fn check_batch(
        &self,
        p: &BatchParams<'_>,
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        let (system, timeline, started) = expected(p.expect);
        let params: [(&(dyn ToSql + Sync), Type); 11] = [
            (&p.names, Type::TEXT_ARRAY),
            (&p.process, Type::TEXT),
            (&p.renew, Type::INT8_ARRAY),
            (&p.lease_micros, Type::INT8),
            (&p.floor, Type::INT8_ARRAY),
            (&p.may_take, Type::BOOL_ARRAY),
            (&p.may_insert, Type::BOOL_ARRAY),
            (&p.continues, Type::INT8_ARRAY),
            (&system, CHECK_TYPES[8].clone()),
            (&timeline, CHECK_TYPES[9].clone()),
            (&started, CHECK_TYPES[10].clone()),
        ];
        let text = match self.term {
            true => &self.statements.check_batch,
            false => &self.statements.check_batch_without_term,
        };
        self.client.query_typed(text, &params).await
    }

    /// Runs the release: one round trip; whether it released the row.
    pub(crate) async fn release(
        &self,
        name: &str,
        process: &str,
        version: i64,
        channel: &str,
    ) -> Result<bool, tokio_postgres::Error> {
        let params: [(&(dyn ToSql + Sync), Type); 4] = [
            (&name, Type::TEXT),
            (&process, Type::TEXT),
            (&version, Type::INT8),
            (&channel, Type::TEXT),
        ];
        let rows = match &self.prepared {
            Prepared::Named { release, .. } => self.client.query(release, &values(&params)).await?,
            Prepared::Unnamed => {
                self.client
                    .query_typed(&self.statements.release, &params)
                    .await?
            }
        };
        Ok(!rows.is_empty())
    }

    /// The rows of [`sql::STATUS`](leadership_core::sql::STATUS): one flag's, or every flag's.
    /// Unnamed: no statement of an operator's tool may collide with another's behind a pooler.
    pub(crate) async fn status(
        &self,
        name: Option<&str>,
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        self.client
            .query_typed(&self.statements.status, &[(&name, Type::TEXT)])
            .await
    }

    /// The rows of a balanced group ([`sql::GROUP`](leadership_core::sql::GROUP)): `(name,
    /// holder, live)`. Unnamed (it runs once per interval per process, not per flag).
    pub(crate) async fn group(
        &self,
        prefix: &str,
        lease_micros: i64,
    ) -> Result<Vec<(String, String, bool)>, tokio_postgres::Error> {
        let rows = self
            .client
            .query_typed(
                &self.statements.group,
                &[(&prefix, Type::TEXT), (&lease_micros, Type::INT8)],
            )
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
            .collect()
    }

    /// [`sql::REVOKE`](leadership_core::sql::REVOKE) or, with `now`,
    /// [`sql::FORCE_RELEASE`](leadership_core::sql::FORCE_RELEASE): the new version if
    /// `holder` held the flag.
    pub(crate) async fn revoke(
        &self,
        name: &str,
        holder: &str,
        now: bool,
    ) -> Result<Option<i64>, tokio_postgres::Error> {
        let rows = if now {
            let channel = self.statements.channel.as_str();
            self.client
                .query_typed(
                    &self.statements.force_release,
                    &[
                        (&name, Type::TEXT),
                        (&holder, Type::TEXT),
                        (&channel, Type::TEXT),
                    ],
                )
                .await?
        } else {
            self.client
                .query_typed(
                    &self.statements.revoke,
                    &[(&name, Type::TEXT), (&holder, Type::TEXT)],
                )
                .await?
        };
        rows.first()
            .map(|row| row.try_get::<_, i64>("version"))
            .transpose()
    }

    /// How to cancel a statement on this connection, if it may be cancelled.
    pub(crate) fn cancel_token(&self) -> Option<&CancelToken> {
        self.cancel.as_ref()
    }

    /// Closes the socket now.
    pub(crate) fn close_now(&self) {
        self.task.abort();
    }

    /// Cancelled once the connection is gone.
    pub(crate) fn closed(&self) -> CancellationToken {
        self.task.closed.clone()
    }
}

/// The server the core expects, as `$9`, `$10`, `$11`. An unknown identity binds NULL to
/// `$9`, and the statement compares nothing.
fn expected(expect: Option<Identity>) -> (Option<String>, Option<i32>, Option<PgTime>) {
    let expect = expect.filter(|e| e.system.is_some());
    let system = expect.and_then(|e| e.system).map(|s| s.to_string());
    let timeline = expect
        .and_then(|e| e.timeline)
        .and_then(|t| i32::try_from(t).ok());
    let started = expect.and_then(|e| e.started).map(PgTime);
    (system, timeline, started)
}

fn values<'a>(params: &'a [(&'a (dyn ToSql + Sync), Type)]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|(v, _)| *v).collect()
}

impl Drop for Conn {
    // Dropping a connection must close its socket now, even if a statement hangs on it: the
    // task owns the socket, so abort it rather than wait for the server.
    fn drop(&mut self) {
        self.task.abort();
    }
}

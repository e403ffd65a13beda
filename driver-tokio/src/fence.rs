//! Fencing the leader's writes where they land, when that is the database holding the flags:
//! [`Guard::fence`](crate::Guard::fence) and [`Guard::fence_in`](crate::Guard::fence_in).

use std::sync::Arc;

use leadership_core::sql::{Statements, FENCE_MESSAGE, FENCE_SQLSTATE, TERM_COLUMN};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::GenericClient;

/// What every guard of one flag shares to fence: the statements and the flag's names.
#[derive(Debug)]
pub(crate) struct Fencing {
    pub(crate) statements: Arc<Statements>,
    pub(crate) name: String,
    pub(crate) process: String,
    pub(crate) lease_micros: i64,
}

/// The fence of one term: [`sql::FENCE`](leadership_core::sql::FENCE) and its four values.
///
/// Run it first in a transaction on the database that holds the flags: it fails (SQLSTATE
/// [`FENCE_SQLSTATE`], which aborts the transaction) unless this term still holds the flag with
/// a live lease by the server's clock, and it holds off every renew and takeover until the
/// transaction ends, so what the transaction writes commits while this term holds the flag, or
/// not at all. It also bounds the transaction by the time the lease has left (its
/// `statement_timeout` and `idle_in_transaction_session_timeout`): keep fenced transactions
/// short, well under the flag's timeout, for this term's own renew waits behind them.
///
/// With tokio-postgres, [`Guard::fence_in`](crate::Guard::fence_in) runs it. With another client
/// (sqlx, diesel, deadpool), run [`sql`](Fence::sql) with [`params`](Fence::params) in your
/// transaction and treat any error as "do not commit"; a client that cannot bind parameters
/// (a shell script) runs [`literal`](Fence::literal).
///
/// On another database than the one holding the flags there is no fence: the token
/// ([`token`](Fence::token)) is all there is, and that system must refuse writes carrying a
/// token lower than one it has seen.
///
/// ```no_run
/// # async fn demo(guard: &leadership_tokio::Guard) {
/// let fence = guard.fence();
/// // sqlx: sqlx::query(fence.sql()).bind(fence.name()).bind(fence.process())
/// //           .bind(fence.token()).bind(fence.lease_micros()).execute(&mut *tx).await?;
/// println!("{} with ({:?}, {:?}, {}, {})", fence.sql(), fence.name(), fence.process(),
///          fence.token(), fence.lease_micros());
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Fence {
    fencing: Arc<Fencing>,
    token: i64,
}

impl Fence {
    pub(crate) fn new(fencing: Arc<Fencing>, token: i64) -> Fence {
        Fence { fencing, token }
    }

    /// The statement, with parameters `$1` [`name`](Fence::name) (text), `$2`
    /// [`process`](Fence::process) (text), `$3` [`token`](Fence::token) (bigint), `$4`
    /// [`lease_micros`](Fence::lease_micros) (bigint).
    pub fn sql(&self) -> &str {
        &self.fencing.statements.fence
    }

    /// `$1`: the flag's name.
    pub fn name(&self) -> &str {
        &self.fencing.name
    }

    /// `$2`: this process's name.
    pub fn process(&self) -> &str {
        &self.fencing.process
    }

    /// `$3`: the term's fencing token.
    pub fn token(&self) -> i64 {
        self.token
    }

    /// `$4`: the lease (the flag's interval) in microseconds.
    pub fn lease_micros(&self) -> i64 {
        self.fencing.lease_micros
    }

    /// The four parameters with their types, for `query_typed` (unnamed: it works behind a
    /// transaction pooler too).
    pub fn params(&self) -> [(&(dyn ToSql + Sync), Type); 4] {
        [
            (&self.fencing.name, Type::TEXT),
            (&self.fencing.process, Type::TEXT),
            (&self.token, Type::INT8),
            (&self.fencing.lease_micros, Type::INT8),
        ]
    }

    /// The statement with its values written in: complete, no parameters, no trailing
    /// semicolon (see [`sql::fence_literal`](leadership_core::sql::fence_literal)).
    pub fn literal(&self) -> String {
        let f = &self.fencing;
        f.statements
            .fence_literal(&f.name, &f.process, self.token, f.lease_micros)
    }

    /// Runs the fence on `client` (a `Transaction`, or a `Client` inside a transaction block
    /// begun by hand: outside one the lock ends with the statement and fences nothing).
    pub async fn run<C: GenericClient + Sync>(&self, client: &C) -> Result<(), FenceError> {
        client
            .query_typed(self.sql(), &self.params())
            .await
            .map(drop)
            .map_err(|e| self.error(e))
    }

    /// What an error from running [`sql`](Fence::sql) through tokio-postgres (or `postgres`)
    /// means: the term is over, the table has no term column, or another failure.
    pub fn error(&self, source: tokio_postgres::Error) -> FenceError {
        let code = source.code();
        let refused = source.as_db_error().is_some_and(|db| {
            db.code().code() == FENCE_SQLSTATE && db.message().contains(FENCE_MESSAGE)
        });
        if refused {
            return self.error_term_over();
        }
        if code == Some(&SqlState::UNDEFINED_COLUMN) {
            return FenceError::NoTermColumn {
                table: self.fencing.statements.regclass.clone(),
                add: self.fencing.statements.add_term.clone(),
            };
        }
        FenceError::Database {
            name: self.fencing.name.clone(),
            source,
        }
    }

    /// [`FenceError::TermOver`] for this term: what a guard already lost answers.
    pub fn error_term_over(&self) -> FenceError {
        FenceError::TermOver {
            name: self.fencing.name.clone(),
            process: self.fencing.process.clone(),
            token: self.token,
        }
    }
}

/// Why a fence did not pass. Whatever the variant, the transaction must not commit (after a
/// database error it cannot: the error aborted it).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FenceError {
    /// This term no longer holds the flag (another process or a later term of this one took
    /// it, it was released or revoked, or its lease expired), or the guard knew it was lost.
    #[error("term {token} of process {process:?} no longer holds flag {name:?}: do not commit")]
    TermOver {
        /// The flag.
        name: String,
        /// This process.
        process: String,
        /// The term's fencing token.
        token: i64,
    },
    /// The table has no term column, so no term can be fenced: this role could not add it at
    /// start-up. The table's owner can.
    #[error("the table {table} has no column \"{column}\", so nothing can be fenced; its owner can add it: {add}", column = TERM_COLUMN)]
    NoTermColumn {
        /// The table, quoted.
        table: String,
        /// The statement that adds the column.
        add: String,
    },
    /// The fence could not run: a lost connection, a read-only transaction, no `UPDATE`
    /// privilege on the table, a timeout.
    #[error("the fence of flag {name:?} failed")]
    Database {
        /// The flag.
        name: String,
        /// The database's error.
        #[source]
        source: tokio_postgres::Error,
    },
}

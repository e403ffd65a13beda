//! Making sure the table exists and can hold flags, once, at start-up.
//!
//! Every statement here is unnamed (`query_typed`: parse, bind and execute in one round trip)
//! or a simple query: behind a transaction pooler a named prepared statement lives on one
//! server connection while its execution may run on another (`prepared statement "sN" does
//! not exist`), and every process's first statement is named `s0` (`… already exists`).

use std::future::Future;
use std::time::Duration;

use leadership_core::sql::{
    Shape, Statements, COLUMNS, CREATE_LOCK, NAME_IS_UNIQUE, TABLE_EXISTS, TABLE_SCHEMA,
    TERM_COLUMN,
};
use tokio_postgres::types::Type;
use tokio_postgres::Client;
use tracing::{debug, info, warn};

use crate::error::Error;

/// How many times creation is retried after losing a race to a process that does not take the
/// creation lock (a Go process): after one loss the table exists, so two suffice.
const CREATE_ATTEMPTS: u32 = 3;

/// How long adding the term column may wait for the table's lock. `ADD COLUMN` needs the
/// strongest lock, and every check, ours and the Go flag's, queues behind a statement waiting
/// for it: a leader's renew must not wait long. A busy table (a long fenced transaction) makes
/// it give up, and the next start tries again.
const ADD_TERM_LOCK_TIMEOUT: &str = "200ms";

/// Creates the table if it is missing, then checks its shape. Safe when many processes start at
/// once on an empty database: creation runs under [`CREATE_LOCK`] in a transaction, and a
/// collision with a process that does not take it (SQLSTATE 23505, 42P07) only means the
/// table now exists, so it checks again.
///
/// A table without the term column (made by the Go flag, or before the column existed) gets it
/// where this role may add it (the table's owner). Where it may not, the flag runs without it:
/// elections work as before (the check writes what the Go flag writes), and every fence fails
/// closed (`42703`) until an owner runs [`ADD_TERM`](leadership_core::sql::ADD_TERM); a warning
/// says so.
pub(crate) async fn ensure_table(
    client: &mut Client,
    statements: &Statements,
    timeout: Duration,
) -> Result<Shape, Error> {
    let regclass = statements.regclass.as_str();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let exists: bool = bounded("checking whether the table exists", timeout, async {
            client
                .query_typed_one(TABLE_EXISTS, &[(&regclass, Type::TEXT)])
                .await
        })
        .await?
        .get(0);
        if exists {
            break;
        }
        match create(client, statements, timeout).await {
            Ok(()) => break,
            Err(Error::Database { source, .. })
                if crate::pg::is_create_race(&source) && attempt < CREATE_ATTEMPTS =>
            {
                debug!(error = %crate::pg::Chain(&source), "another process created the table at the same moment; checking again");
                continue;
            }
            Err(e) => return Err(e),
        }
    }
    let shape = read_shape(client, statements, timeout).await?;
    if shape.term {
        return Ok(shape);
    }
    match add_term(client, statements, timeout).await {
        Ok(()) => {
            info!(table = %statements.regclass, column = TERM_COLUMN, "added the term column, for fencing");
            read_shape(client, statements, timeout).await
        }
        Err(e) => {
            warn!(table = %statements.regclass, column = TERM_COLUMN, error = %e, "cannot add the term column (the table's owner can: {}); elections work without it, fences fail", statements.add_term);
            Ok(shape)
        }
    }
}

/// The schema the table was found in, by this connection's `search_path`.
pub(crate) async fn schema_of(
    client: &Client,
    statements: &Statements,
    timeout: Duration,
) -> Result<Option<String>, Error> {
    let regclass = statements.regclass.as_str();
    let row = bounded("reading the table's schema", timeout, async {
        client
            .query_typed_one(TABLE_SCHEMA, &[(&regclass, Type::TEXT)])
            .await
    })
    .await?;
    Ok(row.get(0))
}

/// Reads the table's columns and indexes and judges them.
async fn read_shape(
    client: &mut Client,
    statements: &Statements,
    timeout: Duration,
) -> Result<Shape, Error> {
    let regclass = statements.regclass.as_str();
    let columns = bounded("reading the table's columns", timeout, async {
        client
            .query_typed(COLUMNS, &[(&regclass, Type::TEXT)])
            .await
    })
    .await?;
    let unique: bool = bounded("reading the table's indexes", timeout, async {
        client
            .query_typed_one(NAME_IS_UNIQUE, &[(&regclass, Type::TEXT)])
            .await
    })
    .await?
    .get(0);
    crate::pg::shape_from_rows(&columns, unique).map_err(|source| Error::Shape {
        table: statements.regclass.clone(),
        source,
    })
}

/// Adds the term column, under the creation lock and a short lock timeout.
async fn add_term(
    client: &mut Client,
    statements: &Statements,
    timeout: Duration,
) -> Result<(), Error> {
    let regclass = statements.regclass.as_str();
    bounded("adding the term column", timeout, async {
        let tx = client.transaction().await?;
        tx.query_typed(CREATE_LOCK, &[(&regclass, Type::TEXT)])
            .await?;
        tx.batch_execute(&format!(
            "SET LOCAL lock_timeout = '{ADD_TERM_LOCK_TIMEOUT}'; {}",
            statements.add_term
        ))
        .await?;
        tx.commit().await
    })
    .await
}

async fn create(
    client: &mut Client,
    statements: &Statements,
    timeout: Duration,
) -> Result<(), Error> {
    let regclass = statements.regclass.as_str();
    // One bound for the whole transaction: waiting for the lock is part of creating.
    let created = bounded("creating the table", timeout, async {
        let tx = client.transaction().await?;
        tx.query_typed(CREATE_LOCK, &[(&regclass, Type::TEXT)])
            .await?;
        // Whoever held the lock before us may have created it: then there is nothing to do
        // (and no CREATE privilege is needed).
        let exists: bool = tx
            .query_typed_one(TABLE_EXISTS, &[(&regclass, Type::TEXT)])
            .await?
            .get(0);
        if !exists {
            tx.batch_execute(&statements.create_table).await?;
        }
        tx.commit().await?;
        Ok(!exists)
    })
    .await?;
    if created {
        info!(table = %statements.regclass, "created the flags table");
    }
    Ok(())
}

/// Runs one set-up step, bounded by `timeout`, with a typed error naming the step.
pub(crate) async fn bounded<T>(
    what: &'static str,
    timeout: Duration,
    step: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(timeout, step).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(Error::Database { what, source }),
        Err(_) => Err(Error::Timeout {
            what,
            after: timeout,
            setting: "connect_timeout",
        }),
    }
}

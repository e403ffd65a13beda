//! Making sure the table exists and has the right shape, safely when many processes start at
//! once on an empty database.

use leadership_core::sql::{self, Statements};
use leadership_tokio::pg::{is_create_race, shape_from_rows};
use postgres::Client;

use crate::error::Error;

/// How often a creation that lost a race is re-checked before giving up.
const CREATE_ATTEMPTS: usize = 3;

/// Creates the table if it is missing, then checks its shape.
///
/// `CREATE TABLE IF NOT EXISTS` is not safe under concurrency in PostgreSQL (two sessions can
/// both pass the check and one fails on `pg_type`'s unique index), so our processes serialise
/// on an advisory lock first; a process that does not take the lock (the Go flag) can still
/// race us, and its win shows up as SQLSTATE 23505, 42P07 or 42710: then the table exists.
pub(crate) fn ensure_table(client: &mut Client, statements: &Statements) -> Result<(), Error> {
    let db = |what| move |source| Error::Database { what, source };
    for _ in 0..CREATE_ATTEMPTS {
        if table_exists(client, statements)? {
            break;
        }
        match create(client, statements) {
            Ok(()) => break,
            Err(e) if is_create_race(&e) => continue,
            Err(e) => return Err(db("creating the table")(e)),
        }
    }
    let columns = client
        .query(sql::COLUMNS, &[&statements.regclass])
        .map_err(db("reading the table's columns"))?;
    let unique: bool = client
        .query_one(sql::NAME_IS_UNIQUE, &[&statements.regclass])
        .and_then(|r| r.try_get(0))
        .map_err(db("reading the table's indexes"))?;
    shape_from_rows(&columns, unique).map_err(|source| Error::Shape {
        table: statements.regclass.clone(),
        source,
    })
}

fn table_exists(client: &mut Client, statements: &Statements) -> Result<bool, Error> {
    client
        .query_one(sql::TABLE_EXISTS, &[&statements.regclass])
        .and_then(|r| r.try_get(0))
        .map_err(|source| Error::Database {
            what: "looking for the table",
            source,
        })
}

fn create(client: &mut Client, statements: &Statements) -> Result<(), postgres::Error> {
    let mut tx = client.transaction()?;
    tx.query(sql::CREATE_LOCK, &[&statements.regclass])?;
    tx.batch_execute(&statements.create_table)?;
    tx.commit()
}

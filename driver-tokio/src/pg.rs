//! Decoding what the check statement returns. Shared with the blocking driver, whose rows are
//! `tokio_postgres` rows too (the `postgres` crate is built on this one).

use leadership_core::{Checked, DbTime, Row};
use tokio_postgres::types::{FromSql, Type};

/// A `timestamp with time zone` as the database's time, with `infinity` kept infinite (the
/// `SystemTime` decoding of `tokio-postgres` cannot represent it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PgTime(pub DbTime);

impl<'a> FromSql<'a> for PgTime {
    fn from_sql(
        _: &Type,
        raw: &'a [u8],
    ) -> Result<PgTime, Box<dyn std::error::Error + Sync + Send>> {
        let bytes: [u8; 8] = raw
            .try_into()
            .map_err(|_| format!("a timestamptz is 8 bytes, got {}", raw.len()))?;
        Ok(PgTime(DbTime::from_pg_micros(i64::from_be_bytes(bytes))))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ
    }
}

/// The row of [`sql::CHECK`](leadership_core::sql::CHECK), owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckRow {
    /// This process changed the row.
    pub won: bool,
    /// A row exists.
    pub found: bool,
    /// `holder`.
    pub holder: Option<String>,
    /// `version`.
    pub version: Option<i64>,
    /// `timestamp`.
    pub timestamp: Option<DbTime>,
    /// The database's `now()`.
    pub now: DbTime,
}

/// A check row that cannot be decoded: the statement's text and the decoding disagree.
#[derive(Debug, thiserror::Error)]
#[error("cannot decode column {column} of the check's row: {source}")]
pub struct DecodeError {
    /// The column.
    pub column: &'static str,
    /// Why.
    #[source]
    pub source: tokio_postgres::Error,
}

impl CheckRow {
    /// Decodes one row of the check statement.
    pub fn decode(row: &tokio_postgres::Row) -> Result<CheckRow, DecodeError> {
        fn get<'a, T: FromSql<'a>>(
            row: &'a tokio_postgres::Row,
            column: &'static str,
        ) -> Result<T, DecodeError> {
            row.try_get(column)
                .map_err(|source| DecodeError { column, source })
        }
        Ok(CheckRow {
            won: get(row, "won")?,
            found: get(row, "found")?,
            holder: get(row, "holder")?,
            version: get(row, "version")?,
            timestamp: get::<Option<PgTime>>(row, "timestamp")?.map(|t| t.0),
            now: get::<PgTime>(row, "now")?.0,
        })
    }

    /// The core's input, borrowing the holder.
    pub fn as_input(&self) -> Checked<'_> {
        Checked {
            won: self.won,
            row: self.found.then_some(Row {
                holder: self.holder.as_deref(),
                version: self.version,
                timestamp: self.timestamp,
            }),
            now: self.now,
        }
    }
}

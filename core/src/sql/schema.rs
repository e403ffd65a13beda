//! The table: creating it, adding the term column, and judging whether an existing table can
//! hold flags ([`check_shape`]).

use super::*;

/// Creates the table as the Go flag does. Run it inside a transaction after
/// [`CREATE_LOCK`], so processes starting together on an empty database do not race
/// (PostgreSQL's `CREATE TABLE IF NOT EXISTS` is not safe under concurrency).
pub const CREATE_TABLE: &str = r#"CREATE TABLE IF NOT EXISTS {table} (
    name text NOT NULL PRIMARY KEY,
    holder text NOT NULL,
    version bigint NOT NULL,
    "timestamp" timestamp with time zone NOT NULL,
    {term} bigint
)"#;

/// Serialises table creation among our processes. Parameter: `$1` [`Statements::regclass`].
pub const CREATE_LOCK: &str = "SELECT pg_advisory_xact_lock(1818584436, hashtext($1))";

/// The schema the table is in, as the connection that created or found it resolved the name
/// (its `search_path`): the fence names the table with it, since a transaction of the
/// caller's may run with another `search_path`. Parameter: `$1` [`Statements::regclass`].
/// Returns one text, NULL if there is no such table.
pub const TABLE_SCHEMA: &str = "SELECT n.nspname::text FROM pg_class c \
     JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)";

/// Whether the table exists. Parameter: `$1` [`Statements::regclass`]. Returns one bool.
pub const TABLE_EXISTS: &str = "SELECT to_regclass($1) IS NOT NULL";

/// The table's columns, for [`check_shape`]. Parameter: `$1` [`Statements::regclass`].
/// Returns `name` (text), `type` (text, as `format_type` spells it), `not_null` (bool),
/// `has_default` (bool).
pub const COLUMNS: &str = "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), \
     a.attnotnull, a.atthasdef FROM pg_attribute a WHERE a.attrelid = to_regclass($1) \
     AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum";

/// Whether `name` alone has a unique index (`ON CONFLICT (name)` needs one). Parameter: `$1`
/// [`Statements::regclass`]. Returns one bool.
pub const NAME_IS_UNIQUE: &str = "SELECT EXISTS (SELECT 1 FROM pg_index i \
     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
     WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indnkeyatts = 1 \
     AND i.indpred IS NULL AND a.attname = 'name')";

/// One column of the table as [`COLUMNS`] describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column<'a> {
    /// Column name.
    pub name: &'a str,
    /// Type as `format_type` spells it (`text`, `bigint`, `timestamp with time zone`).
    pub type_name: &'a str,
    /// `NOT NULL`.
    pub not_null: bool,
    /// Has a default.
    pub has_default: bool,
}

/// A table that cannot serve as a flags table.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShapeError {
    /// A required column is missing.
    #[error("column {column:?} is missing; the table needs name text, holder text, version bigint, \"timestamp\" timestamptz")]
    MissingColumn {
        /// The column.
        column: &'static str,
    },
    /// A required column has the wrong type.
    #[error("column {column:?} is {found}; it must be {expected}")]
    WrongType {
        /// The column.
        column: &'static str,
        /// Its type.
        found: String,
        /// The type it needs.
        expected: &'static str,
    },
    /// Another column is NOT NULL without a default, so inserting a flag would fail.
    #[error("column {column:?} is NOT NULL without a default, so a new flag cannot be inserted")]
    ExtraNotNull {
        /// The column.
        column: String,
    },
    /// `name` has no unique index of its own.
    #[error("column \"name\" has no unique index (primary key) of its own; the check needs one")]
    NameNotUnique,
}

const REQUIRED: [(&str, &[&str]); 4] = [
    ("name", &["text", "character varying"]),
    ("holder", &["text", "character varying"]),
    ("version", &["bigint"]),
    ("timestamp", &["timestamp with time zone"]),
];

/// What [`check_shape`] found beyond the required columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// The table has the term column ([`TERM_COLUMN`], `bigint`): [`Statements::check`] can
    /// run and [`FENCE`] can pass.
    pub term: bool,
}

/// Judges whether a table can hold flags, from [`COLUMNS`] and [`NAME_IS_UNIQUE`].
///
/// Nullable columns are accepted (a table created by hand may have them); NULLs in a row are
/// reported by the core as [`Anomaly::NullInRow`](crate::Anomaly::NullInRow). The term column
/// is optional (a table made by the Go flag has none), but must be a nullable `bigint` if
/// present (the Go flag's inserts leave it out).
pub fn check_shape(columns: &[Column<'_>], name_is_unique: bool) -> Result<Shape, ShapeError> {
    for (column, types) in REQUIRED {
        let found = columns
            .iter()
            .find(|c| c.name == column)
            .ok_or(ShapeError::MissingColumn { column })?;
        let base = found.type_name.split('(').next().unwrap_or("");
        if !types.contains(&base) {
            return Err(ShapeError::WrongType {
                column,
                found: found.type_name.to_string(),
                expected: types[0],
            });
        }
    }
    let required: Vec<&str> = REQUIRED.iter().map(|(c, _)| *c).collect();
    if let Some(extra) = columns
        .iter()
        .find(|c| !required.contains(&c.name) && c.not_null && !c.has_default)
    {
        return Err(ShapeError::ExtraNotNull {
            column: extra.name.to_string(),
        });
    }
    if !name_is_unique {
        return Err(ShapeError::NameNotUnique);
    }
    let term = columns.iter().find(|c| c.name == TERM_COLUMN);
    if let Some(found) = term.filter(|c| c.type_name != "bigint") {
        return Err(ShapeError::WrongType {
            column: TERM_COLUMN,
            found: found.type_name.to_string(),
            expected: "bigint",
        });
    }
    Ok(Shape {
        term: term.is_some(),
    })
}

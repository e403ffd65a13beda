//! The table's name, validated and quoted.

use super::*;

/// The default table, the Go flag's.
pub const DEFAULT_TABLE: &str = "leadership_flags";

/// PostgreSQL truncates identifiers longer than this many bytes; we refuse them instead.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// A table name that is safe to put into SQL: always quoted, so any characters work, and
/// refused if PostgreSQL would truncate or reject it.
///
/// ```
/// use leadership_core::sql::Table;
/// let t = Table::new("leadership_flags")?;
/// assert_eq!(t.quoted(), r#""leadership_flags""#);
/// let hostile = Table::new(r#"x"; DROP TABLE users; --"#)?;
/// assert_eq!(hostile.quoted(), r#""x""; DROP TABLE users; --""#);
/// assert!(Table::new("").is_err());
/// # Ok::<(), leadership_core::sql::TableError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    schema: Option<String>,
    name: String,
}

/// A table or schema name PostgreSQL cannot take as it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    /// Empty name.
    #[error("the table name must not be empty")]
    Empty,
    /// Contains a NUL byte.
    #[error("the table name {0:?} contains a NUL byte")]
    Nul(String),
    /// Longer than [`MAX_IDENTIFIER_BYTES`]: PostgreSQL would silently truncate it.
    #[error("the table name {name:?} is {len} bytes; PostgreSQL identifiers are at most 63")]
    TooLong {
        /// The name.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
}

impl Table {
    /// A table in the connection's `search_path`.
    pub fn new(name: &str) -> Result<Table, TableError> {
        Ok(Table {
            schema: None,
            name: identifier(name)?,
        })
    }

    /// A table in a given schema.
    pub fn qualified(schema: &str, name: &str) -> Result<Table, TableError> {
        Ok(Table {
            schema: Some(identifier(schema)?),
            name: identifier(name)?,
        })
    }

    /// The table's own name, unquoted.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name as SQL: each part in double quotes, inner quotes doubled.
    pub fn quoted(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", quote(schema), quote(&self.name)),
            None => quote(&self.name),
        }
    }
}

impl Default for Table {
    fn default() -> Table {
        Table {
            schema: None,
            name: DEFAULT_TABLE.to_string(),
        }
    }
}

fn identifier(name: &str) -> Result<String, TableError> {
    if name.is_empty() {
        return Err(TableError::Empty);
    }
    if name.contains('\0') {
        return Err(TableError::Nul(name.to_string()));
    }
    if name.len() > MAX_IDENTIFIER_BYTES {
        return Err(TableError::TooLong {
            name: name.to_string(),
            len: name.len(),
        });
    }
    Ok(name.to_string())
}

pub(super) fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

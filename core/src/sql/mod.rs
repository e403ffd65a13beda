//! Every statement the drivers send, in one place.
//!
//! The templates name the table `{table}` and the term column `{term}`; [`Statements::new`]
//! renders them for a validated [`Table`]. Both drivers prepare the rendered text once per connection (unprepared, planning
//! the check costs more than the round trips it saves) and bind the parameters documented on
//! each constant. The simulator's reference table implements the same semantics and is checked
//! against a real server.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

mod batch;
mod check;
mod fence;
mod release;
mod schema;
mod server;
mod table;
#[cfg(test)]
mod tests;

pub use batch::CHECK_BATCH;
pub use check::{ADD_TERM, CHECK, TERM_COLUMN};
pub use fence::{fence_literal, FENCE, FENCE_MESSAGE, FENCE_SQLSTATE};
pub use release::{FORCE_RELEASE, RELEASE, REVOKE};
pub use schema::{
    check_shape, Column, Shape, ShapeError, COLUMNS, CREATE_LOCK, CREATE_TABLE, NAME_IS_UNIQUE,
    TABLE_EXISTS, TABLE_SCHEMA,
};
pub use server::{PROMOTED_AGO, READ_ONLY, SERVER};
pub use table::{Table, TableError, DEFAULT_TABLE, MAX_IDENTIFIER_BYTES};

use batch::check_batch_template;
use check::check_template;
use table::quote;

/// Every flag's row, for operators (`leadership status`). Parameter: `$1` a flag name, or NULL
/// for all. Returns `name` (text), `holder` (text), `version` (bigint), `timestamp`
/// (timestamptz), `now` (timestamptz), ordered by name.
pub const STATUS: &str = r#"SELECT name, holder, version, "timestamp", now() AS now FROM {table}
WHERE $1::text IS NULL OR name = $1 ORDER BY name"#;

/// Every row of a balanced group ([`balance`](crate::balance)), in one statement: what a
/// balanced set reads every interval to learn the live members and the shards' holders.
/// Parameters: `$1` the group's prefix ([`balance::group_prefix`](crate::balance::group_prefix),
/// text), `$2` the lease in microseconds (bigint). Returns `name` (text), `holder` (text),
/// `live` (bool: the lease has not expired by the server's clock, the negation of the
/// takeover rule in [`CHECK`]; a released row is not live), ordered by name.
///
/// A read-only statement: no lock, no write, no transaction ID. The prefix is compared as text
/// (`left`), so `%` and `_` in a group name are ordinary characters.
pub const GROUP: &str = r#"SELECT name, holder,
       "timestamp" >= now() - $2::bigint * interval '1 microsecond' AS live
FROM {table} WHERE left(name, char_length($1::text)) = $1::text ORDER BY name"#;

/// The statements rendered for one table: what a driver prepares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statements {
    /// [`CHECK`], writing the term column.
    pub check: String,
    /// [`CHECK`] for a table without the term column (one [`ADD_TERM`] could not change): it
    /// writes the Go flag's four columns (`$8` still decides whether a win is a renew of the
    /// same term, which writes `version + 1`, or a new term, which follows the clock).
    pub check_without_term: String,
    /// [`CHECK_BATCH`], writing the term column.
    pub check_batch: String,
    /// [`CHECK_BATCH`] for a table without the term column.
    pub check_batch_without_term: String,
    /// [`RELEASE`].
    pub release: String,
    /// [`CREATE_TABLE`].
    pub create_table: String,
    /// [`ADD_TERM`].
    pub add_term: String,
    /// [`FENCE`].
    pub fence: String,
    /// [`STATUS`].
    pub status: String,
    /// [`FORCE_RELEASE`].
    pub force_release: String,
    /// [`REVOKE`].
    pub revoke: String,
    /// [`GROUP`].
    pub group: String,
    /// `LISTEN` on [`Statements::channel`], quoted.
    pub listen: String,
    /// The notification channel: the table's own name, so flags in different tables do not
    /// wake each other. Passed as text to `pg_notify`.
    pub channel: String,
    /// The table's quoted name as text, for `to_regclass($1)` and the creation lock.
    pub regclass: String,
}

impl Statements {
    /// Renders every statement for `table`.
    pub fn new(table: &Table) -> Statements {
        let quoted = table.quoted();
        let r = |template: &str| render(template, &quoted, &[]);
        Statements {
            check: r(&check_template(true)),
            check_without_term: r(&check_template(false)),
            check_batch: r(&check_batch_template(true)),
            check_batch_without_term: r(&check_batch_template(false)),
            release: r(RELEASE),
            create_table: r(CREATE_TABLE),
            add_term: r(ADD_TERM),
            fence: r(FENCE),
            status: r(STATUS),
            force_release: r(FORCE_RELEASE),
            revoke: r(REVOKE),
            group: r(GROUP),
            listen: format!("LISTEN {}", quote(table.name())),
            channel: table.name().to_string(),
            regclass: quoted,
        }
    }
}

/// Fills a template in one pass: `{table}`, `{term}` ([`TERM_COLUMN`], quoted) and, when
/// `values` are given, `$1`… by the values (written as they are: the caller quotes them).
pub(super) fn render(template: &str, table: &str, values: &[String]) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(at) = rest.find(['{', '$']) {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("{table}") {
            out.push_str(table);
            rest = after;
        } else if let Some(after) = rest.strip_prefix("{term}") {
            out.push_str(&quote(TERM_COLUMN));
            rest = after;
        } else if let Some((value, after)) = placeholder(rest, values) {
            out.push_str(value);
            rest = after;
        } else {
            out.push_str(&rest[..1]);
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
}

/// `$n` at the start of `text`, when `values` has an n-th value: the value and what follows.
fn placeholder<'t, 'v>(text: &'t str, values: &'v [String]) -> Option<(&'v str, &'t str)> {
    let digits = text.strip_prefix('$')?;
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    let n: usize = digits[..end].parse().ok()?;
    let value = values.get(n.checked_sub(1)?)?;
    Some((value, &digits[end..]))
}

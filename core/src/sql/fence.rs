//! The fence, [`FENCE`]: what a leader's own transactions run first, so that they commit only
//! while its term holds the flag; and its literal form for clients that cannot bind parameters.

use super::*;

/// The SQLSTATE [`FENCE`] raises when the term does not hold the flag: `22P02`
/// (`invalid_text_representation`), from casting its message to `bigint`, the one way a plain
/// statement can raise an error of its own (returning no row would not abort the transaction).
/// The message begins with [`FENCE_MESSAGE`].
pub const FENCE_SQLSTATE: &str = "22P02";

/// How the message of [`FENCE`]'s error begins (after PostgreSQL's `invalid input syntax for
/// type bigint: "`).
pub const FENCE_MESSAGE: &str = "leadership fence:";

/// The fence: run first in a transaction on the database that holds the flags, it lets the
/// transaction go on only while this term holds the flag, and keeps it so until the transaction
/// ends, so what the transaction writes commits while the term holds the flag, or not at all.
///
/// Parameters: `$1` flag name (text), `$2` this process (text), `$3` the term's fencing token
/// (bigint), `$4` the lease in microseconds (bigint, the flag's interval).
///
/// - It raises [`FENCE_SQLSTATE`] (which aborts the transaction) unless the row names `$2`, its
///   term column ([`TERM_COLUMN`]) is `$3`, and its lease is live by the server's clock *now*
///   (`clock_timestamp()`, not the transaction's start: `"timestamp" >= clock_timestamp() -
///   lease`, the negation of [`CHECK`]'s takeover rule). A released row (timestamp 1970), a
///   revoked one (holder `''`), a deleted one, a later term of the same process, a Go takeover
///   (holder changed), an infinite timestamp: all fail. Without the term column the statement
///   fails with `42703` (undefined column): closed as well.
/// - It locks the row `FOR SHARE`. Every write to the row (our renew and takeover, the Go
///   flag's, a release) takes `FOR NO KEY UPDATE`, which conflicts with it, so none commits
///   until the transaction ends (`FOR KEY SHARE` would not hold them off). Reads are not held.
/// - It bounds the transaction: transaction-local `statement_timeout` and
///   `idle_in_transaction_session_timeout` (and `transaction_timeout` on PostgreSQL 17+) become
///   the time the lease has left by the server's clock (at least 1 ms), or the value already
///   set if lower. A hung client cannot hold the flag past the lease its term had. The lease
///   cannot move meanwhile: this term's own renew waits for the lock as well.
///
/// Returns one row: `term` (bigint, `$3`), `until` (timestamptz: the lease's expiry by the
/// server's clock, the bound), `timeout_ms` (bigint), `timeouts` (bigint: how many settings it
/// set). It needs `SELECT` and `UPDATE` privilege on the table (`FOR SHARE` asks for `UPDATE`
/// on at least one column) and a read-write transaction; under `REPEATABLE READ` a row changed since the snapshot fails the
/// lock with `40001`, which is closed too. Outside a transaction block the lock ends with the
/// statement: it fences nothing.
pub const FENCE: &str = r#"WITH held AS (
    SELECT least("timestamp", clock_timestamp()) + $4::bigint * interval '1 microsecond' AS until
    FROM {table}
    WHERE name = $1::text AND holder = $2::text AND {term} = $3::bigint
      AND "timestamp" >= clock_timestamp() - $4::bigint * interval '1 microsecond'
      AND "timestamp" < 'infinity'
    FOR SHARE
), bound AS (
    SELECT until,
           greatest(1, ceil(extract(epoch FROM until - clock_timestamp()) * 1000))::bigint AS ms
    FROM held
)
SELECT $3::bigint AS term, until, ms AS timeout_ms,
       (SELECT count(set_config(t.name, CASE
                  WHEN current_setting(t.name)::interval > interval '0'
                  THEN least(ms, ceil(extract(epoch FROM current_setting(t.name)::interval) * 1000)::bigint)
                  ELSE ms END::text, true))
        FROM (VALUES ('statement_timeout'), ('idle_in_transaction_session_timeout'),
                     ('transaction_timeout')) AS t(name)
        WHERE t.name <> 'transaction_timeout'
           OR current_setting('server_version_num')::integer >= 170000) AS timeouts
FROM bound
UNION ALL
SELECT format('leadership fence: flag %L is not held by term %s of process %L (the term is over, or its lease expired)',
              $1::text, $3::bigint, $2::text)::bigint, NULL, NULL, NULL
WHERE NOT EXISTS (SELECT FROM held)"#;

/// [`FENCE`] for one term with its values written in as literals: a complete statement, with
/// no parameters and no trailing semicolon, for a client that cannot bind parameters (a shell
/// script through `psql`; `leadership run` gives it to its command as `LEADERSHIP_FENCE_SQL`).
///
/// Safe for any name: the text values are written as escape-string literals (`E'…'`, quotes and
/// backslashes escaped), whose meaning does not depend on `standard_conforming_strings`, and
/// the substitution is one pass, so nothing in a value is read as a placeholder.
///
/// ```
/// use leadership_core::sql::{fence_literal, Table};
/// let table = Table::qualified("ops", "flags")?;
/// let sql = fence_literal(&table, "report", "it's me", 42, 10_000_000);
/// assert!(sql.contains(r#"FROM "ops"."flags""#));
/// assert!(sql.contains(r"holder = E'it\'s me'::text"));
/// assert!(sql.contains("42::bigint") && !sql.contains('$'));
/// # Ok::<(), leadership_core::sql::TableError>(())
/// ```
pub fn fence_literal(
    table: &Table,
    name: &str,
    process: &str,
    token: i64,
    lease_micros: i64,
) -> String {
    Statements::new(table).fence_literal(name, process, token, lease_micros)
}

impl Statements {
    /// [`fence_literal`] for this table.
    pub fn fence_literal(
        &self,
        name: &str,
        process: &str,
        token: i64,
        lease_micros: i64,
    ) -> String {
        let values = [
            literal(name),
            literal(process),
            token.to_string(),
            lease_micros.to_string(),
        ];
        render(FENCE, &self.regclass, &values)
    }
}

/// A text value as an escape-string literal.
pub(super) fn literal(value: &str) -> String {
    format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

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

/// The check: one statement, one round trip, for leader and follower alike.
///
/// Parameters: `$1` flag name (text), `$2` this process (text), `$3` the version to renew, or
/// NULL to renew nothing (bigint), `$4` the lease in microseconds (bigint), `$5` the floor: the
/// lowest version a win may write (bigint, never NULL), `$6` may take: whether this check may
/// take over an expired row (boolean, never NULL), `$7` may insert: whether it may insert a
/// missing row (boolean, never NULL), `$8` the fencing token of the term a renew continues, or
/// NULL if a win starts a new term (bigint), then the server this process expects to answer
/// ([`Identity`](crate::Identity)): `$9` its system identifier (text, as [`SERVER`] returns it;
/// NULL: not known yet, nothing is compared), `$10` its timeline (integer), `$11` its
/// postmaster's start (timestamptz).
///
/// Returns exactly one row: `won` (bool), `found` (bool), `holder` (text), `version` (bigint),
/// `timestamp` (timestamptz), `now` (timestamptz), `won_by` (text: `created`, `renewed` or
/// `took_over` when won, else NULL), and the answering server's identity, computed by the
/// statement on the server that runs it: `system` (text), `timeline` (integer), `started`
/// (timestamptz), `durable` (bool), as [`SERVER`] computes them.
///
/// - the answering server is not the one expected (`$9` is not NULL and system, timeline or
///   start differ): change nothing and return the row as of the statement's start (not won),
///   with the server's identity: behind a transaction pooler the server can change under an
///   open connection, and only the statement itself runs where the write would land;
/// - no row, and `$7`: insert it (won, `created`);
/// - the row names this process at version `$3`: renew it (won, `renewed`), whatever `$6` says;
/// - `$6`, and the row's lease has expired by the server's `now()` (`timestamp < now() - lease`,
///   the Go flag's rule): take it over (won, `took_over`);
/// - otherwise change nothing and return the row as of the statement's start (not won), or
///   `found = false` and NULLs if no row was visible.
///
/// A server that is not durable (`fsync` or `synchronous_commit` off) and whose postmaster
/// started less than a lease ago by its clock may have lost commits in a crash, on the same
/// timeline: it takes nothing over and inserts nothing until a lease after its start, when
/// every lease granted before the crash has expired. This fences every process, newcomers
/// included. (A durable server's restart loses nothing committed.)
///
/// A renew that continues its term (the row names `$2` at `$3`, `$8` is set and `$5` is at
/// most `$3 + 1`) writes version `version + 1`. Every other win starts a new term and writes
/// `greatest(version + 1, $5, µs since the Unix epoch by the server's now())` (an insert,
/// `greatest($5, µs)`): new terms' tokens follow the server's clock, so a term started after a
/// failover is above every token of the lost history, as long as the new server's clock reads
/// later than the old one's did at the lost write (see the README's Tokens section). Timestamp
/// is `now()`; the returned row is the row after the change. `$5` keeps fencing tokens from
/// going backwards for a process that saw them; it is only compared and copied, never computed
/// with, so no value of it can overflow. A version at `i64::MAX` is never incremented (that
/// would fail the whole statement); the core reports it as an anomaly.
///
/// The server's identity: `system` from `pg_control_system()`, `timeline` from the current WAL
/// file's name (NULL on a standby in recovery, where `pg_current_wal_lsn()` would fail; the
/// statement fails there anyway with `25006`, since it writes), `started` is
/// `pg_postmaster_start_time()`; all open to any role. How long ago the server was promoted is
/// not computed here (`pg_ls_waldir()` needs a privilege, checked even in a branch not taken):
/// a change of identity seen by the check fences the process for a whole lease, which covers
/// any promotion's fence; only a newcomer's first connection learns the promotion, from
/// [`PROMOTED_AGO`] at connect, where its role may run it.
///
/// It writes only when it wins. The `UPDATE` tests its condition on the row version its
/// snapshot sees, and a row that fails it is neither locked nor written: a follower's check
/// assigns no transaction ID, writes no WAL and waits for no row lock (an `INSERT … ON
/// CONFLICT DO UPDATE` locks the row before it tests its `WHERE`, so every check was a write
/// transaction). The `INSERT` runs only when the snapshot saw no row, and `ON CONFLICT DO
/// NOTHING` leaves a row inserted meanwhile alone, so the two never both win. A renew writes
/// what the Go flag's `UPDATE` writes (one heap update, usually HOT, and the commit).
///
/// No version is won twice: when the row the snapshot saw passes the condition but another
/// transaction has changed it since, the `UPDATE` waits for that transaction, then re-tests the
/// whole condition on the newest version under its row lock (READ COMMITTED's re-check) and
/// writes on top of that version only if it still passes: a renew needs `$3` to be the newest
/// version, a takeover needs the newest write to have expired by this statement's `now()`. The
/// condition therefore names only the row being updated, never the snapshot's `seen`. Under
/// REPEATABLE READ or SERIALIZABLE the statement fails instead of re-testing, which is safe.
/// (`won_by` does read the snapshot: a renew wins only on the version `$3` this process saw
/// committed before it sent the check, so the snapshot shows that version too.)
///
/// The timestamp written is `now()` at the statement's start, which is after the client sent
/// it: the fact the leader's local deadline rests on.
///
/// The term column ([`TERM_COLUMN`]) names the term a row's lease belongs to, for [`FENCE`]: an
/// insert or a takeover sets it to the version it writes (the new term's fencing token); a
/// renew keeps it at `$8` when it continues that term; any other win starts a new term,
/// fencing token and term alike (a renew of a lapsed lease of ours, an adopted one). Rendered
/// without the column ([`Statements::check_without_term`]) where the table has none.
pub const CHECK: &str = r#"WITH server AS (
    SELECT (SELECT system_identifier::text FROM pg_control_system()) AS system,
           CASE WHEN pg_is_in_recovery() THEN NULL
           ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::integer
           END AS timeline,
           pg_postmaster_start_time() AS started,
           current_setting('fsync') = 'on' AND current_setting('synchronous_commit') <> 'off' AS durable
), allowed AS (
    SELECT ($9::text IS NULL
            OR ($9::text = system AND $10::integer IS NOT DISTINCT FROM timeline
                AND $11::timestamptz IS NOT DISTINCT FROM started)) AS same,
           (durable OR started <= now() - $4::bigint * interval '1 microsecond') AS settled
    FROM server
), seen AS (
    SELECT holder, version, "timestamp" FROM {table} WHERE name = $1
), updated AS (
    UPDATE {table} AS flag
    SET holder = $2, version = CASE WHEN {continues} THEN flag.version + 1
                                    ELSE greatest(flag.version + 1, $5::bigint, {clock}) END,
        "timestamp" = now(){set_term}
    WHERE flag.name = $1
      AND (SELECT same FROM allowed)
      AND flag.version < 9223372036854775807
      AND ((flag.holder = $2 AND flag.version = $3::bigint)
           OR ($6::boolean AND (SELECT settled FROM allowed)
               AND flag."timestamp" < now() - $4::bigint * interval '1 microsecond'))
    RETURNING flag.holder, flag.version, flag."timestamp"
), inserted AS (
    INSERT INTO {table} AS flag (name, holder, version, "timestamp"{term_column})
    SELECT $1, $2, greatest($5::bigint, {clock}), now(){term_value}
    WHERE $7::boolean AND NOT EXISTS (SELECT FROM seen)
      AND (SELECT same AND settled FROM allowed)
    ON CONFLICT (name) DO NOTHING
    RETURNING flag.holder, flag.version, flag."timestamp"
), won AS (
    SELECT holder, version, "timestamp",
           CASE WHEN EXISTS (SELECT FROM seen WHERE seen.holder = $2 AND seen.version = $3::bigint)
           THEN 'renewed' ELSE 'took_over' END AS won_by
    FROM updated
    UNION ALL
    SELECT holder, version, "timestamp", 'created' FROM inserted
), reply AS (
    SELECT true AS won, true AS found, holder, version, "timestamp", won_by FROM won
    UNION ALL
    SELECT false, true, holder, version, "timestamp", NULL FROM seen
    WHERE NOT EXISTS (SELECT FROM won)
    UNION ALL
    SELECT false, false, NULL, NULL, NULL, NULL
    WHERE NOT EXISTS (SELECT FROM won) AND NOT EXISTS (SELECT FROM seen)
)
SELECT reply.won, reply.found, reply.holder, reply.version, reply."timestamp", now() AS now,
       reply.won_by, server.system, server.timeline, server.started, server.durable
FROM reply, server"#;

/// The condition under which [`CHECK`]'s win continues the lease's term: a renew of the
/// version `$3` this process holds, to the next version, saying which term it continues.
const CONTINUES: &str = "flag.holder = $2 AND flag.version = $3::bigint \
     AND $5::bigint <= flag.version + 1 AND $8::bigint IS NOT NULL";

/// The server's clock in microseconds since the Unix epoch: the floor of a new term's token.
/// (`extract` returns an exact `numeric` since PostgreSQL 14, and `now()` has microseconds.)
const CLOCK_MICROS: &str = "(extract(epoch FROM now()) * 1000000)::bigint";

/// The term column's name: a nullable `bigint` beside the Go flag's four columns, which the Go
/// flag never names, so it never reads or writes it (its takeovers change the holder, which is
/// enough to end a term for [`FENCE`]). Created with the table, and added to an existing one
/// by [`ADD_TERM`].
pub const TERM_COLUMN: &str = "term";

/// What [`CHECK`] writes into the term column on a win: the term it continues (`$8`) for a renew
/// of the same term, else the version written, the new term's fencing token. `{term}` is
/// [`TERM_COLUMN`], quoted.
const SET_TERM: &str = r#",
        {term} = CASE WHEN {continues} THEN $8::bigint
                      ELSE greatest(flag.version + 1, $5::bigint, {clock}) END"#;

/// Adds the term column to a table created before it existed (or by the Go flag): idempotent,
/// and only for the table's owner. Run it in a transaction after [`CREATE_LOCK`] with a short
/// `lock_timeout`: `ADD COLUMN` takes the table's strongest lock and every check waits behind
/// it, while the column without a default is a change of the catalog only (no rewrite).
pub const ADD_TERM: &str = "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {term} bigint";

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

/// The release: makes the lease expired for every reader and wakes the followers.
///
/// Parameters: `$1` flag name (text), `$2` this process (text), `$3` the version it holds
/// (bigint), `$4` the notification channel (text, [`Statements::channel`]).
///
/// Returns one row per released row (so zero or one). The row keeps its holder; `version + 1`
/// fails any compare-and-set based on an earlier read; the timestamp becomes the Unix epoch, which
/// the Go flag (lib/pq, `time.Time`) parses and sees as expired by 56 years. The `NOTIFY`
/// carries the flag name and is delivered when the statement commits.
///
/// It releases exactly version `$3`: a release abandoned at its timeout that lands later (a
/// zombie) must not release a lease this process won since, in this life or the next. After
/// a renew in doubt the core reads the row again first, to release the version really there.
pub const RELEASE: &str = r#"WITH released AS (
    UPDATE {table}
    SET version = version + 1, "timestamp" = '1970-01-01 00:00:00+00'
    WHERE name = $1 AND holder = $2 AND version = $3::bigint
      AND version < 9223372036854775807
    RETURNING name
)
SELECT pg_notify($4, name) FROM released"#;

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

/// The operator's revoke (`leadership release`): takes the lease from a live holder without
/// giving anyone an overlap. The timestamp stays, so nobody takes over before the lease runs
/// out; `version + 1` and a holder no process has (the empty name: the configuration refuses
/// it, and the Go flag never writes it) make the holder's next renew fail, Go's too, so it
/// steps down. Refuses unless `$2` holds the flag. Parameters: `$1` flag name, `$2` the holder
/// to revoke. Returns one row per revoked row (zero or one), carrying the new `version`.
pub const REVOKE: &str = r#"UPDATE {table}
SET holder = '', version = version + 1
WHERE name = $1 AND holder = $2 AND version < 9223372036854775807
RETURNING version"#;

/// The operator's immediate release (`leadership release --now`), for a holder known to be
/// dead: like [`RELEASE`], but without knowing the version, so it needs no holder's
/// cooperation; it still refuses unless `$2` holds the flag. A live holder would go on
/// believing until its deadline while a notified follower leads: two leaders. Parameters:
/// `$1` flag name, `$2` the holder to release, `$3` the notification channel. Returns one row
/// per released row (zero or one), carrying the new `version`.
pub const FORCE_RELEASE: &str = r#"WITH released AS (
    UPDATE {table}
    SET version = version + 1, "timestamp" = '1970-01-01 00:00:00+00'
    WHERE name = $1 AND holder = $2 AND version < 9223372036854775807
    RETURNING name, version
)
SELECT version, pg_notify($3, name) FROM released"#;

/// What the server says about itself, once per connection (the core's
/// [`Server`](crate::Server)): the cluster's identity, the WAL timeline, when the postmaster
/// started, whether commits are durable, and whether a promotion is so recent that its
/// end-of-recovery checkpoint has not finished (the checkpoint's timeline is behind the WAL's,
/// for a few seconds after `pg_ctl promote`). Every function here is open to any role. On a
/// standby (in recovery) the timeline is NULL.
///
/// Returns `system` (text: the numeric system identifier), `timeline` (integer), `started`
/// (timestamptz), `durable` (bool), `promoting` (bool), `can_list_wal` (bool: whether
/// [`PROMOTED_AGO`] may run; PostgreSQL checks a function's privilege when the statement
/// starts, even in a branch not taken, so it is a statement of its own).
pub const SERVER: &str = r#"WITH tli AS (
    SELECT CASE WHEN pg_is_in_recovery() THEN NULL
           ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::integer
           END AS timeline
)
SELECT (SELECT system_identifier::text FROM pg_control_system()) AS system,
       tli.timeline,
       pg_postmaster_start_time() AS started,
       current_setting('fsync') = 'on' AND current_setting('synchronous_commit') <> 'off' AS durable,
       coalesce((SELECT timeline_id FROM pg_control_checkpoint()) < tli.timeline, false) AS promoting,
       has_function_privilege('pg_catalog.pg_ls_waldir()', 'execute') AS can_list_wal
FROM tli"#;

/// Whether the server takes no writes: a standby (in recovery), or `default_transaction_read_only`
/// on a primary. Asked once at start, so that a setting that can never lead (one standby host,
/// or a list without `target_session_attrs=read-write` that landed on one) is an error naming
/// the servers, not a process whose every check fails with SQLSTATE 25006. Returns one bool.
pub const READ_ONLY: &str =
    "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'";

/// How long ago the server was promoted to timeline `$1` (integer), by its clock, in
/// microseconds: the age of that timeline's history file. Needs `pg_ls_waldir()` (superusers
/// and `pg_monitor`; see [`SERVER`]'s `can_list_wal`). Returns one bigint, NULL if there is no
/// such file.
pub const PROMOTED_AGO: &str = r#"SELECT (extract(epoch FROM now() - max(modification)) * 1000000)::bigint
FROM pg_ls_waldir() WHERE name = lpad(upper(to_hex($1::integer)), 8, '0') || '.history'"#;

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

fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// The statements rendered for one table: what a driver prepares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statements {
    /// [`CHECK`], writing the term column.
    pub check: String,
    /// [`CHECK`] for a table without the term column (one [`ADD_TERM`] could not change): it
    /// writes the Go flag's four columns (`$8` still decides whether a win is a renew of the
    /// same term, which writes `version + 1`, or a new term, which follows the clock).
    pub check_without_term: String,
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

/// [`CHECK`] with its parts filled in, with or without the term column (`{table}` and
/// `{term}` left for [`render`]).
fn check_template(term: bool) -> String {
    let (set_term, term_column, term_value) = match term {
        true => (SET_TERM, ", {term}", ", greatest($5::bigint, {clock})"),
        false => ("", "", ""),
    };
    CHECK
        .replace("{set_term}", set_term)
        .replace("{term_column}", term_column)
        .replace("{term_value}", term_value)
        .replace("{continues}", CONTINUES)
        .replace("{clock}", CLOCK_MICROS)
}

impl Statements {
    /// Renders every statement for `table`.
    pub fn new(table: &Table) -> Statements {
        let quoted = table.quoted();
        let r = |template: &str| render(template, &quoted, &[]);
        Statements {
            check: r(&check_template(true)),
            check_without_term: r(&check_template(false)),
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
fn literal(value: &str) -> String {
    format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Fills a template in one pass: `{table}`, `{term}` ([`TERM_COLUMN`], quoted) and, when
/// `values` are given, `$1`… by the values (written as they are: the caller quotes them).
fn render(template: &str, table: &str, values: &[String]) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn col<'a>(name: &'a str, type_name: &'a str) -> Column<'a> {
        Column {
            name,
            type_name,
            not_null: true,
            has_default: false,
        }
    }

    fn go_table() -> Vec<Column<'static>> {
        alloc::vec![
            col("name", "text"),
            col("holder", "text"),
            col("version", "bigint"),
            col("timestamp", "timestamp with time zone"),
        ]
    }

    #[test]
    fn the_go_flags_table_is_accepted() {
        assert_eq!(check_shape(&go_table(), true), Ok(Shape { term: false }));
    }

    #[test]
    fn the_term_column_is_found_and_must_be_a_nullable_bigint() {
        let mut t = go_table();
        t.push(Column {
            name: TERM_COLUMN,
            type_name: "bigint",
            not_null: false,
            has_default: false,
        });
        assert_eq!(check_shape(&t, true), Ok(Shape { term: true }));
        t[4].type_name = "integer";
        assert!(matches!(
            check_shape(&t, true),
            Err(ShapeError::WrongType { column: "term", .. })
        ));
        t[4] = col(TERM_COLUMN, "bigint");
        assert!(matches!(
            check_shape(&t, true),
            Err(ShapeError::ExtraNotNull { .. })
        ));
    }

    #[test]
    fn a_wrong_shape_names_the_column() {
        let mut t = go_table();
        t[3] = col("timestamp", "timestamp without time zone");
        assert_eq!(
            check_shape(&t, true),
            Err(ShapeError::WrongType {
                column: "timestamp",
                found: "timestamp without time zone".into(),
                expected: "timestamp with time zone"
            })
        );
        let mut t = go_table();
        t.remove(1);
        assert_eq!(
            check_shape(&t, true),
            Err(ShapeError::MissingColumn { column: "holder" })
        );
        let mut t = go_table();
        t[2] = col("version", "integer");
        assert!(matches!(
            check_shape(&t, true),
            Err(ShapeError::WrongType {
                column: "version",
                ..
            })
        ));
        let mut t = go_table();
        t.push(col("owner", "text"));
        assert_eq!(
            check_shape(&t, true),
            Err(ShapeError::ExtraNotNull {
                column: "owner".into()
            })
        );
        assert_eq!(
            check_shape(&go_table(), false),
            Err(ShapeError::NameNotUnique)
        );
    }

    #[test]
    fn varchar_and_nullable_columns_are_accepted() {
        let mut t = go_table();
        t[1] = Column {
            name: "holder",
            type_name: "character varying(200)",
            not_null: false,
            has_default: false,
        };
        t.push(Column {
            name: "note",
            type_name: "text",
            not_null: true,
            has_default: true,
        });
        assert_eq!(check_shape(&t, true), Ok(Shape { term: false }));
    }

    #[test]
    fn statements_use_the_quoted_table_everywhere() {
        let t = Table::qualified("ops", "Flags \"x\"").unwrap();
        let s = Statements::new(&t);
        for text in [
            &s.check,
            &s.check_without_term,
            &s.fence,
            &s.add_term,
            &s.release,
            &s.create_table,
            &s.status,
            &s.force_release,
            &s.revoke,
        ] {
            assert!(!text.contains('{'), "{text}");
        }
        assert!(s
            .check
            .contains(r#"INSERT INTO "ops"."Flags ""x""" AS flag"#));
        assert!(s.check.contains(r#""term" = CASE"#) && s.check.contains("$8"));
        assert!(
            !s.check_without_term.contains(r#""term""#) && s.check_without_term.contains("$11")
        );
        assert!(s.fence.contains(r#"AND "term" = $3::bigint"#));
        assert_eq!(s.listen, r#"LISTEN "Flags ""x""""#);
        assert_eq!(s.channel, "Flags \"x\"");
        assert_eq!(s.regclass, r#""ops"."Flags ""x""""#);
    }

    #[test]
    fn the_literal_fence_is_one_pass_and_quotes_every_value() {
        let t = Table::qualified("o\"ps", "$1 {term}").unwrap();
        let sql = fence_literal(&t, "{table}", "a\\'b $2", 0, i64::MAX);
        assert!(sql.contains(r#"FROM "o""ps"."$1 {term}""#), "{sql}");
        assert!(sql.contains(r"name = E'{table}'::text"), "{sql}");
        assert!(sql.contains(r"holder = E'a\\\'b $2'::text"), "{sql}");
        assert!(sql.contains(r#""term" = 0::bigint"#), "{sql}");
        assert!(
            sql.contains("9223372036854775807::bigint * interval"),
            "{sql}"
        );
        assert!(!sql.ends_with(';'));
    }

    #[test]
    fn bad_table_names_are_refused() {
        assert_eq!(Table::new(""), Err(TableError::Empty));
        assert!(matches!(Table::new("a\0"), Err(TableError::Nul(_))));
        assert!(matches!(
            Table::new(&"t".repeat(64)),
            Err(TableError::TooLong { len: 64, .. })
        ));
        assert!(Table::new(&"t".repeat(63)).is_ok());
        assert_eq!(Table::default().quoted(), "\"leadership_flags\"");
    }
}

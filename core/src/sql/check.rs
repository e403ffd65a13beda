//! The check, [`CHECK`]: the one statement a process runs every few seconds, leader and
//! follower alike, with the argument that it never grants a version twice; and the term column
//! it writes for [`FENCE`].

use super::*;

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
pub const CHECK: &str = r#"WITH {server}, seen AS (
    SELECT holder, version, "timestamp" FROM {table} WHERE name = $1
), updated AS (
    UPDATE {table} AS flag
    SET holder = $2, version = CASE WHEN {continues} THEN flag.version + 1
                                    ELSE greatest(flag.version + 1, $5::bigint, {clock}) END,
        "timestamp" = now(){set_term}
    WHERE flag.name = $1 AND {wins}
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

/// The answering server's identity (`server`) and what it allows (`allowed`: `same`, the
/// server expected; `settled`, durable or started a lease ago): the first two parts of
/// [`CHECK`] and of the batch ([`CHECK_BATCH`](super::CHECK_BATCH)).
pub(super) const SERVER_PARTS: &str = r#"server AS (
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
)"#;

/// The condition under which [`CHECK`] writes the row `flag`: the server allows it, the
/// version can grow, and it is this process's renew of `$3` or a takeover of an expired lease.
pub(super) const WINS: &str = r#"(SELECT same FROM allowed)
      AND flag.version < 9223372036854775807
      AND ((flag.holder = $2 AND flag.version = $3::bigint)
           OR ($6::boolean AND (SELECT settled FROM allowed)
               AND flag."timestamp" < now() - $4::bigint * interval '1 microsecond'))"#;

/// The condition under which [`CHECK`]'s win continues the lease's term: a renew of the
/// version `$3` this process holds, to the next version, saying which term it continues.
pub(super) const CONTINUES: &str = "flag.holder = $2 AND flag.version = $3::bigint \
     AND $5::bigint <= flag.version + 1 AND $8::bigint IS NOT NULL";

/// The server's clock in microseconds since the Unix epoch: the floor of a new term's token.
/// (`extract` returns an exact `numeric` since PostgreSQL 14, and `now()` has microseconds.)
pub(super) const CLOCK_MICROS: &str = "(extract(epoch FROM now()) * 1000000)::bigint";

/// The term column's name: a nullable `bigint` beside the Go flag's four columns, which the Go
/// flag never names, so it never reads or writes it (its takeovers change the holder, which is
/// enough to end a term for [`FENCE`]). Created with the table, and added to an existing one
/// by [`ADD_TERM`].
pub const TERM_COLUMN: &str = "term";

/// What [`CHECK`] writes into the term column on a win: the term it continues (`$8`) for a renew
/// of the same term, else the version written, the new term's fencing token. `{term}` is
/// [`TERM_COLUMN`], quoted.
pub(super) const SET_TERM: &str = r#",
        {term} = CASE WHEN {continues} THEN $8::bigint
                      ELSE greatest(flag.version + 1, $5::bigint, {clock}) END"#;

/// Adds the term column to a table created before it existed (or by the Go flag): idempotent,
/// and only for the table's owner. Run it in a transaction after [`CREATE_LOCK`] with a short
/// `lock_timeout`: `ADD COLUMN` takes the table's strongest lock and every check waits behind
/// it, while the column without a default is a change of the catalog only (no rewrite).
pub const ADD_TERM: &str = "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {term} bigint";

/// [`CHECK`] with its parts filled in, with or without the term column (`{table}` and
/// `{term}` left for [`render`]).
pub(super) fn check_template(term: bool) -> String {
    let (set_term, term_column, term_value) = match term {
        true => (SET_TERM, ", {term}", ", greatest($5::bigint, {clock})"),
        false => ("", "", ""),
    };
    CHECK
        .replace("{server}", SERVER_PARTS)
        .replace("{wins}", WINS)
        .replace("{set_term}", set_term)
        .replace("{term_column}", term_column)
        .replace("{term_value}", term_value)
        .replace("{continues}", CONTINUES)
        .replace("{clock}", CLOCK_MICROS)
}

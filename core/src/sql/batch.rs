//! The batched check, [`CHECK_BATCH`]: the checks of many flags of one process in one
//! statement (one round trip, one transaction, so one commit and one `fdatasync` for every
//! renewal in it), each with exactly the single check's semantics, or "not attempted" when
//! another transaction holds its row's lock.

use alloc::string::String;

use super::check::{CLOCK_MICROS, CONTINUES, SERVER_PARTS, SET_TERM, WINS};

/// The checks of many flags of one process, in one statement.
///
/// Parameters are [`CHECK`](super::CHECK)'s, with the per-flag ones as arrays of one element per
/// flag, in the same order: `$1` names (text[], unique), `$3` the versions to renew (bigint[],
/// NULL elements renew nothing), `$5` the floors (bigint[]), `$6` may take (boolean[]), `$7`
/// may insert (boolean[]), `$8` the terms a renew continues (bigint[], NULL elements start a
/// new term). Shared by every flag: `$2` this process, `$4` the lease in microseconds, `$9`,
/// `$10`, `$11` the server expected.
///
/// Returns one row per element of `$1`, in its order: `name`, then [`CHECK`](super::CHECK)'s
/// columns (`won`, `found`, `holder`, `version`, `timestamp`, `now`, `won_by`, `system`,
/// `timeline`, `started`, `durable`), then `attempted` (bool).
///
/// **Each row has the single check's semantics**, as if [`CHECK`](super::CHECK) had run for
/// that flag alone at the batch's snapshot, except that a row another transaction has locked
/// is skipped rather than waited for (`attempted = false`, not won, the row as of the
/// statement's start). The argument, part by part:
///
/// - `server` and `allowed` are the single check's, computed once: one statement runs on one
///   server.
/// - `seen` is the single check's `seen` for every name: the snapshot's row, or none.
/// - `candidates` are the names whose snapshot row passes the single check's `UPDATE`
///   condition (`WINS` in `check.rs`, the same text with `flag` the snapshot's row): exactly the rows the
///   single check's `UPDATE` would go on to lock. No other row is locked or written, so a
///   follower's check in a batch still writes and locks nothing.
/// - `locked` locks the candidates in name order, `FOR NO KEY UPDATE SKIP LOCKED` (the lock
///   the `UPDATE` takes): it waits for nobody. A row another transaction has changed since the
///   snapshot is locked at its newest version; one locked by another transaction is skipped.
/// - `updated` is the single check's `UPDATE` (the same condition, the same new values),
///   restricted to the rows `locked` holds. For each it tests the condition on the snapshot's
///   version and, if that passes and the row has changed since, re-tests the whole condition
///   on the newest version under the lock (READ COMMITTED's re-check), as the single check
///   does; holding the lock already, it never waits. So no version is won twice, by the single
///   check's argument.
/// - `inserted` is the single check's `INSERT` for every name the snapshot saw no row for, in
///   name order, `ON CONFLICT DO NOTHING`: a row inserted meanwhile is left alone.
/// - The reply is the single check's: won (the row after the change, `won_by` as the single
///   check tells it), else the snapshot's row, else `found = false` and NULLs. `won_by` joins
///   each changed row to its request and its snapshot row (one of each per name): a
///   correlated `EXISTS` per row read the whole batch once per row, quadratic in the batch
///   (10,000 renews took 5–7 s).
///
/// **No deadlock.** Row locks are taken only by `locked` (which never waits: `SKIP LOCKED`) and
/// by `updated` (only rows `locked` holds). The only waits left are `ON CONFLICT`'s, on a
/// concurrent insert of the same name, and every batch inserts in name order, so no two
/// batches wait for each other in a circle. (Two batches locking overlapping rows in
/// different orders, each waiting for the other, deadlocked when tried by hand: 40P01.)
///
/// A skipped flag's core is told "not attempted", which counts as a failed check for that flag
/// alone; the connection stays. A renew skipped this way leaves the lease to its deadline, as
/// a failed renew does.
pub const CHECK_BATCH: &str = r#"WITH {server}, req AS (
    SELECT * FROM unnest($1::text[], $3::bigint[], $5::bigint[], $6::boolean[], $7::boolean[],
                         $8::bigint[]) WITH ORDINALITY
        AS req(name, renew, floor, may_take, may_insert, continues, i)
), seen AS (
    SELECT flag.name, flag.holder, flag.version, flag."timestamp"
    FROM {table} AS flag JOIN req ON flag.name = req.name
), candidates AS (
    SELECT flag.name FROM seen AS flag JOIN req ON flag.name = req.name
    WHERE {wins}
), locked AS MATERIALIZED (
    SELECT flag.name FROM {table} AS flag
    WHERE flag.name IN (SELECT name FROM candidates)
    ORDER BY flag.name
    FOR NO KEY UPDATE SKIP LOCKED
), updated AS (
    UPDATE {table} AS flag
    SET holder = $2, version = CASE WHEN {continues} THEN flag.version + 1
                                    ELSE greatest(flag.version + 1, req.floor, {clock}) END,
        "timestamp" = now(){set_term}
    FROM req
    WHERE flag.name = req.name AND flag.name IN (SELECT name FROM locked)
      AND {wins}
    RETURNING flag.name, flag.holder, flag.version, flag."timestamp"
), inserted AS (
    INSERT INTO {table} AS flag (name, holder, version, "timestamp"{term_column})
    SELECT req.name, $2, greatest(req.floor, {clock}), now(){term_value}
    FROM req
    WHERE req.may_insert AND NOT EXISTS (SELECT FROM seen WHERE seen.name = req.name)
      AND (SELECT same AND settled FROM allowed)
    ORDER BY req.name
    ON CONFLICT (name) DO NOTHING
    RETURNING flag.name, flag.holder, flag.version, flag."timestamp"
), won AS (
    SELECT updated.name, updated.holder, updated.version, updated."timestamp",
           CASE WHEN seen.holder = $2 AND seen.version = req.renew
           THEN 'renewed' ELSE 'took_over' END AS won_by
    FROM updated JOIN req ON req.name = updated.name
    LEFT JOIN seen ON seen.name = updated.name
    UNION ALL
    SELECT name, holder, version, "timestamp", 'created' FROM inserted
)
SELECT req.name, won.name IS NOT NULL AS won, won.name IS NOT NULL OR seen.name IS NOT NULL AS found,
       CASE WHEN won.name IS NOT NULL THEN won.holder ELSE seen.holder END AS holder,
       CASE WHEN won.name IS NOT NULL THEN won.version ELSE seen.version END AS version,
       CASE WHEN won.name IS NOT NULL THEN won."timestamp" ELSE seen."timestamp" END AS "timestamp",
       now() AS now, won.won_by, server.system, server.timeline, server.started, server.durable,
       won.name IS NOT NULL OR candidates.name IS NULL OR locked.name IS NOT NULL AS attempted
FROM req
LEFT JOIN won ON won.name = req.name
LEFT JOIN seen ON seen.name = req.name
LEFT JOIN candidates ON candidates.name = req.name
LEFT JOIN locked ON locked.name = req.name
CROSS JOIN server
ORDER BY req.i"#;

/// The per-flag parameters of [`CHECK`](super::CHECK) and the columns of the batch's `req`
/// that hold them: the single check's fragments become the batch's by this substitution alone.
const PER_FLAG: [(&str, &str); 5] = [
    ("$3::bigint", "req.renew"),
    ("$5::bigint", "req.floor"),
    ("$6::boolean", "req.may_take"),
    ("$7::boolean", "req.may_insert"),
    ("$8::bigint", "req.continues"),
];

/// A fragment of the single check with its per-flag parameters read from `req`.
fn per_flag(fragment: &str) -> String {
    PER_FLAG
        .iter()
        .fold(String::from(fragment), |text, (param, column)| {
            text.replace(param, column)
        })
}

/// [`CHECK_BATCH`] with its parts filled in, with or without the term column (`{table}` and
/// `{term}` left for [`render`](super::render)).
pub(super) fn check_batch_template(term: bool) -> String {
    let (set_term, term_column, term_value) = match term {
        true => (
            per_flag(SET_TERM),
            ", {term}",
            String::from(", greatest(req.floor, {clock})"),
        ),
        false => (String::new(), "", String::new()),
    };
    CHECK_BATCH
        .replace("{server}", SERVER_PARTS)
        .replace("{wins}", &per_flag(WINS))
        .replace("{set_term}", &set_term)
        .replace("{term_column}", term_column)
        .replace("{term_value}", &term_value)
        .replace("{continues}", &per_flag(CONTINUES))
        .replace("{clock}", CLOCK_MICROS)
}

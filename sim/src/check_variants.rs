//! Other texts of the check than [`leadership_core::sql::CHECK`], kept for comparison only:
//! what it was before it wrote only when it wins, the candidate design not chosen, and a
//! deliberately broken one that the race tests must catch. Templates name the table `{table}`
//! like the core's; [`render`] fills it in. Nothing outside the benchmark and the tests runs
//! them.

use leadership_core::sql::Table;

/// The check before it wrote only when it wins (until issue 14): `INSERT … ON CONFLICT (name)
/// DO UPDATE … WHERE`. Four parameters: `$1` name, `$2` process, `$3` the version to renew,
/// `$4` the lease in microseconds; the same six columns. `ON CONFLICT DO UPDATE` locks the row
/// before it tests its `WHERE`, so a follower's check that wins nothing still takes a row lock,
/// assigns a transaction ID and writes WAL (a heap lock record and the commit).
pub const BEFORE: &str = r#"WITH seen AS (
    SELECT holder, version, "timestamp" FROM {table} WHERE name = $1
), won AS (
    INSERT INTO {table} AS flag (name, holder, version, "timestamp")
    VALUES ($1, $2, 0, now())
    ON CONFLICT (name) DO UPDATE
    SET holder = excluded.holder, version = flag.version + 1, "timestamp" = excluded."timestamp"
    WHERE flag.version < 9223372036854775807
      AND ((flag.holder = excluded.holder AND flag.version = $3::bigint)
           OR flag."timestamp" < now() - $4::bigint * interval '1 microsecond')
    RETURNING flag.holder, flag.version, flag."timestamp"
)
SELECT true AS won, true AS found, holder, version, "timestamp", now() AS now FROM won
UNION ALL
SELECT false, true, holder, version, "timestamp", now() FROM seen
WHERE NOT EXISTS (SELECT FROM won)
UNION ALL
SELECT false, false, NULL, NULL, NULL, now()
WHERE NOT EXISTS (SELECT FROM won) AND NOT EXISTS (SELECT FROM seen)"#;

/// Candidate design A, not chosen: the insert gated on what the snapshot saw (`INSERT …
/// SELECT … WHERE <could win> ON CONFLICT DO UPDATE … WHERE <re-tested on the locked row>`).
/// Same six parameters and semantics as [`CHECK`](leadership_core::sql::CHECK). A follower
/// writes nothing, but a renew still goes through `ON CONFLICT DO UPDATE`, which writes a heap
/// lock record before the update: more WAL per renew than the Go flag's `UPDATE`.
pub const GATED_INSERT: &str = r#"WITH seen AS (
    SELECT holder, version, "timestamp" FROM {table} WHERE name = $1
), won AS (
    INSERT INTO {table} AS flag (name, holder, version, "timestamp")
    SELECT $1, $2, $5::bigint, now()
    WHERE CASE WHEN EXISTS (SELECT FROM seen)
          THEN EXISTS (SELECT FROM seen WHERE version < 9223372036854775807
               AND ((holder = $2 AND version = $3::bigint)
                    OR ($6::boolean AND "timestamp" < now() - $4::bigint * interval '1 microsecond')))
          ELSE $6::boolean END
    ON CONFLICT (name) DO UPDATE
    SET holder = excluded.holder, version = greatest(flag.version + 1, $5::bigint),
        "timestamp" = excluded."timestamp"
    WHERE flag.version < 9223372036854775807
      AND ((flag.holder = excluded.holder AND flag.version = $3::bigint)
           OR ($6::boolean AND flag."timestamp" < now() - $4::bigint * interval '1 microsecond'))
    RETURNING flag.holder, flag.version, flag."timestamp"
)
SELECT true AS won, true AS found, holder, version, "timestamp", now() AS now FROM won
UNION ALL
SELECT false, true, holder, version, "timestamp", now() FROM seen
WHERE NOT EXISTS (SELECT FROM won)
UNION ALL
SELECT false, false, NULL, NULL, NULL, now()
WHERE NOT EXISTS (SELECT FROM won) AND NOT EXISTS (SELECT FROM seen)"#;

/// Deliberately broken: decides on the row its snapshot saw (`seen`) and writes on the newest
/// version without re-testing. The `UPDATE … FROM seen` still waits for a concurrent writer and
/// then updates the newest version, but READ COMMITTED re-tests the condition with `seen`'s old
/// values, so two processes that both saw an expired lease both win, the second on top of the
/// first's fresh lease: an early takeover. Same six parameters as the real check.
pub const NO_RECHECK: &str = r#"WITH seen AS (
    SELECT holder, version, "timestamp" FROM {table} WHERE name = $1
), updated AS (
    UPDATE {table} AS flag
    SET holder = $2, version = greatest(flag.version + 1, $5::bigint), "timestamp" = now()
    FROM seen
    WHERE flag.name = $1
      AND seen.version < 9223372036854775807
      AND ((seen.holder = $2 AND seen.version = $3::bigint)
           OR ($6::boolean AND seen."timestamp" < now() - $4::bigint * interval '1 microsecond'))
    RETURNING flag.holder, flag.version, flag."timestamp"
), inserted AS (
    INSERT INTO {table} AS flag (name, holder, version, "timestamp")
    SELECT $1, $2, $5::bigint, now()
    WHERE $6::boolean AND NOT EXISTS (SELECT FROM seen)
    ON CONFLICT (name) DO NOTHING
    RETURNING flag.holder, flag.version, flag."timestamp"
), won AS (
    SELECT holder, version, "timestamp" FROM updated
    UNION ALL
    SELECT holder, version, "timestamp" FROM inserted
)
SELECT true AS won, true AS found, holder, version, "timestamp", now() AS now FROM won
UNION ALL
SELECT false, true, holder, version, "timestamp", now() FROM seen
WHERE NOT EXISTS (SELECT FROM won)
UNION ALL
SELECT false, false, NULL, NULL, NULL, now()
WHERE NOT EXISTS (SELECT FROM won) AND NOT EXISTS (SELECT FROM seen)"#;

/// A template with `{table}` replaced by the table's quoted name.
pub fn render(template: &str, table: &Table) -> String {
    template.replace("{table}", &table.quoted())
}

/// A safeguard of [`FENCE`](leadership_core::sql::FENCE) to switch off, for the tests that show
/// each one matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FenceWithout {
    /// The term column: `holder = me AND version >= token` instead, which a later term of the
    /// same process passes.
    Term,
    /// `FOR SHARE`: `FOR KEY SHARE` instead, which an `UPDATE` of the row does not wait for.
    ShareLock,
    /// `clock_timestamp()`: the transaction's start (`now()`) instead, which is stale in a
    /// transaction that began before the lease expired.
    Clock,
}

/// [`FENCE`](leadership_core::sql::FENCE) for `table` with one safeguard switched off; panics if
/// the fence's text no longer has the piece (the variant would silently equal the fence).
pub fn fence_without(safeguard: FenceWithout, table: &Table) -> String {
    let fence = leadership_core::sql::Statements::new(table).fence;
    let (from, to) = match safeguard {
        FenceWithout::Term => (r#"AND "term" = $3::bigint"#, "AND version >= $3::bigint"),
        FenceWithout::ShareLock => ("FOR SHARE", "FOR KEY SHARE"),
        FenceWithout::Clock => ("clock_timestamp()", "now()"),
    };
    assert!(fence.contains(from), "the fence has no {from:?}");
    fence.replace(from, to)
}

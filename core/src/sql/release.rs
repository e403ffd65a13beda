//! Letting a row go: the holder's [`RELEASE`], and the operator's [`REVOKE`] and
//! [`FORCE_RELEASE`].

/// The release: makes the lease expired for every reader and wakes the followers.
///
/// Parameters: `$1` flag name (text), `$2` this process (text), `$3` the version it holds
/// (bigint), `$4` the notification channel (text, [`Statements::channel`](super::Statements::channel)).
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

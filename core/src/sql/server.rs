//! What a server says about itself: its identity and history ([`SERVER`]), whether it takes
//! writes ([`READ_ONLY`]), and how recently it was promoted ([`PROMOTED_AGO`]).

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

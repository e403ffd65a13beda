//! What the driver needs from PostgreSQL, without async: decoding the check's row and the
//! table's shape, classifying errors, and the connection settings.

use std::time::Duration;

use leadership_core::sql::{check_shape, Column, Shape, ShapeError};
use leadership_core::{Checked, Config, DbTime, Row, Server, WonBy};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};

/// PostgreSQL truncates `application_name` to this many bytes (`NAMEDATALEN - 1`).
pub(crate) const MAX_APPLICATION_NAME_BYTES: usize = 63;

/// The `application_name` a driver sets: `leadership:<process>`, cut at a character boundary
/// to fit [`MAX_APPLICATION_NAME_BYTES`], so operators and tests find a process's backend in
/// `pg_stat_activity`.
pub(crate) fn application_name(process: &str) -> String {
    let mut name = format!("leadership:{process}");
    let mut end = MAX_APPLICATION_NAME_BYTES.min(name.len());
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name.truncate(end);
    name
}

/// The default connect timeout for each host: what a multi-host failover needs (a black-holed
/// first host must not eat the whole budget), at least twice the statement timeout, at most
/// 5 s, and no more than half a lease otherwise.
pub(crate) fn default_connect_timeout(config: &Config) -> Duration {
    (config.interval() / 2)
        .min(Duration::from_secs(5))
        .max(config.timeout() * 2)
}

/// The connection settings the driver adds to the user's, unless the user set them:
/// `application_name` ([`application_name`]), the connect timeout for each host, and TCP
/// settings that make a dead peer or a black-holed network fail the socket within about one
/// lease (`tcp_user_timeout` = interval, keepalives every interval/4 after interval/2 idle).
/// The driver also bounds every statement itself; these only make sure a connection it
/// abandoned does not linger in the kernel.
pub(crate) fn configure(
    pg: &mut tokio_postgres::Config,
    config: &Config,
    connect_timeout: Duration,
) {
    // A competing process needs a writable server: skip standbys and read-only primaries in a
    // host list. `Any` is tokio-postgres's default and cannot be told from an explicit `any`.
    // One host has no other to skip to, and asking costs every connect a round trip (a slow
    // link's reconnect must fit in what is left of the lease): a list only.
    let hosts = pg.get_hosts().len().max(pg.get_hostaddrs().len());
    if hosts > 1 && pg.get_target_session_attrs() == tokio_postgres::config::TargetSessionAttrs::Any
    {
        pg.target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite);
    }
    if pg.get_application_name().is_none() {
        pg.application_name(application_name(config.process()));
    }
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(connect_timeout);
    }
    if pg.get_tcp_user_timeout().is_none() {
        pg.tcp_user_timeout(config.interval());
    }
    pg.keepalives(true);
    pg.keepalives_idle((config.interval() / 2).max(Duration::from_secs(1)));
    if pg.get_keepalives_interval().is_none() {
        pg.keepalives_interval((config.interval() / 4).max(Duration::from_secs(1)));
    }
    if pg.get_keepalives_retries().is_none() {
        pg.keepalives_retries(3);
    }
}

/// A `tokio_postgres` error with its causes and SQLSTATE, for messages and logs: the error's
/// own `Display` says only "db error" or "error connecting to server". Carries no password
/// (neither the errors nor their causes include the connection settings).
///
/// ```no_run
/// # async fn demo(client: tokio_postgres::Client) {
/// if let Err(e) = client.simple_query("SELEC 1").await {
///     // db error: ERROR: syntax error at or near "SELEC" (SQLSTATE 42601)
///     eprintln!("{}", leadership_tokio::internal::Chain(&e));
/// }
/// # }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Chain<'a>(pub &'a tokio_postgres::Error);

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::error::Error as _;
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        if let Some(code) = self.0.code() {
            write!(f, " (SQLSTATE {})", code.code())?;
        }
        Ok(())
    }
}

/// Whether a failed connection attempt is a refused login: SQLSTATE class 28 (wrong password,
/// unknown role, role not allowed to log in, no `pg_hba.conf` entry).
pub(crate) fn is_login_refused(error: &tokio_postgres::Error) -> bool {
    error.code().is_some_and(|c| c.code().starts_with("28"))
}

/// Whether a connection attempt with `target_session_attrs=read-write` found only read-only
/// servers (tokio-postgres says so in an I/O error, without a SQLSTATE).
pub(crate) fn is_read_only_server(error: &tokio_postgres::Error) -> bool {
    error.code().is_none() && Chain(error).to_string().contains("does not allow writes")
}

/// Whether a statement failed because the server is read-only: SQLSTATE 25006 (a standby, or
/// `default_transaction_read_only` on a primary). The connection is dropped and the next
/// connect skips that server.
pub(crate) fn is_read_only_statement(error: &tokio_postgres::Error) -> bool {
    error.code() == Some(&SqlState::READ_ONLY_SQL_TRANSACTION)
}

/// Whether the connection that ran a statement which failed with `error` is still good for
/// the next one: the server answered with an error about the statement alone, on a
/// connection that is open. Not a connection exception (class 08), an operator's intervention
/// (class 57P: shutdown, crash), an internal error (class XX), a read-only server (25006, the
/// next connect skips it), or a prepared statement gone missing (26000, behind a pooler).
pub(crate) fn keeps_connection(error: &tokio_postgres::Error) -> bool {
    let Some(db) = error.as_db_error() else {
        return false;
    };
    let code = db.code().code();
    !error.is_closed()
        && !code.starts_with("08")
        && !code.starts_with("57P")
        && !code.starts_with("XX")
        && code != SqlState::READ_ONLY_SQL_TRANSACTION.code()
        && code != SqlState::INVALID_SQL_STATEMENT_NAME.code()
}

/// The servers of `pg`'s host list, `host:port` (never a password), for messages.
pub fn servers(pg: &tokio_postgres::Config) -> String {
    let ports = pg.get_ports();
    pg.get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                tokio_postgres::config::Host::Tcp(host) => format!("{host}:{port}"),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(path) => {
                    format!("{}/.s.PGSQL.{port}", path.display())
                }
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether creating the table failed because another process created it at the same moment
/// without taking [`CREATE_LOCK`](leadership_core::sql::CREATE_LOCK) (the Go flag does not):
/// `unique_violation` on the catalog (23505), `duplicate_table` (42P07) or `duplicate_object`
/// (42710). Check again whether the table exists.
pub(crate) fn is_create_race(error: &tokio_postgres::Error) -> bool {
    error.code().is_some_and(|c| {
        *c == SqlState::UNIQUE_VIOLATION
            || *c == SqlState::DUPLICATE_TABLE
            || *c == SqlState::DUPLICATE_OBJECT
    })
}

/// Judges the table's shape from the rows of [`sql::COLUMNS`](leadership_core::sql::COLUMNS)
/// and the bool of [`sql::NAME_IS_UNIQUE`](leadership_core::sql::NAME_IS_UNIQUE), with
/// [`check_shape`]. A row that does not decode counts as a missing column.
pub(crate) fn shape_from_rows(
    columns: &[tokio_postgres::Row],
    name_is_unique: bool,
) -> Result<Shape, ShapeError> {
    let decoded: Vec<(String, String, bool, bool)> = columns
        .iter()
        .filter_map(|r| {
            Some((
                r.try_get(0).ok()?,
                r.try_get(1).ok()?,
                r.try_get(2).ok()?,
                r.try_get(3).ok()?,
            ))
        })
        .collect();
    let columns: Vec<Column<'_>> = decoded
        .iter()
        .map(|(name, type_name, not_null, has_default)| Column {
            name,
            type_name,
            not_null: *not_null,
            has_default: *has_default,
        })
        .collect();
    check_shape(&columns, name_is_unique)
}

/// A `timestamp with time zone` as the database's time, with `infinity` kept infinite (the
/// `SystemTime` decoding of `tokio-postgres` cannot represent it).
///
/// ```
/// use leadership_core::DbTime;
/// use leadership_tokio::internal::PgTime;
/// use tokio_postgres::types::{FromSql, Type};
/// let infinity = PgTime::from_sql(&Type::TIMESTAMPTZ, &i64::MAX.to_be_bytes()).unwrap();
/// assert_eq!(infinity, PgTime(DbTime::INFINITY));
/// assert!(PgTime::from_sql(&Type::TIMESTAMPTZ, &[0; 4]).is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PgTime(pub DbTime);

impl<'a> FromSql<'a> for PgTime {
    fn from_sql(
        _: &Type,
        raw: &'a [u8],
    ) -> Result<PgTime, Box<dyn std::error::Error + Sync + Send>> {
        let bytes: [u8; 8] = raw
            .try_into()
            .map_err(|_| format!("a timestamptz is 8 bytes, got {}", raw.len()))?;
        Ok(PgTime(DbTime::from_pg_micros(i64::from_be_bytes(bytes))))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ
    }
}

/// The check's `$11` (the expected server's start) is bound as a `timestamptz`.
impl ToSql for PgTime {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut tokio_postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&self.0.as_pg_micros().to_be_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ
    }

    to_sql_checked!();
}

/// The row of [`sql::CHECK`](leadership_core::sql::CHECK), owned.
///
/// ```
/// use leadership_core::DbTime;
/// use leadership_tokio::internal::CheckRow;
/// let row = CheckRow {
///     won: false,
///     found: true,
///     holder: Some("pod-b".into()),
///     version: Some(7),
///     timestamp: Some(DbTime::from_unix_micros(1_700_000_000_000_000)),
///     now: DbTime::from_unix_micros(1_700_000_001_000_000),
///     won_by: None,
///     server: Default::default(),
/// };
/// let input = row.as_input();
/// assert_eq!(input.row.unwrap().holder, Some("pod-b"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckRow {
    /// This process changed the row.
    pub won: bool,
    /// A row exists.
    pub found: bool,
    /// `holder`.
    pub holder: Option<String>,
    /// `version`.
    pub version: Option<i64>,
    /// `timestamp`.
    pub timestamp: Option<DbTime>,
    /// The database's `now()`.
    pub now: DbTime,
    /// `won_by`: how the statement won, if it did.
    pub won_by: Option<WonBy>,
    /// The server that ran the statement, as the statement computed it (`system`,
    /// `timeline`, `started`, `durable`; never `promoted_ago`).
    pub server: Server,
}

/// A check row that cannot be decoded: the statement's text and the decoding disagree, or the
/// server sent something else than it should.
///
/// ```
/// use leadership_tokio::internal::CheckRow;
/// use tokio_postgres::types::Type;
/// let columns = std::array::from_fn(|_| (Type::INT4, Some(&[0u8, 0, 0, 1][..])));
/// let e = CheckRow::from_columns(&columns).unwrap_err();
/// assert_eq!(e.column, "won");
/// ```
#[derive(Debug, thiserror::Error)]
#[error("cannot decode column {column} of the check's row: {source}")]
pub struct DecodeError {
    /// The column.
    pub column: &'static str,
    /// Why.
    #[source]
    pub source: Box<dyn std::error::Error + Sync + Send>,
}

/// The columns of [`sql::CHECK`](leadership_core::sql::CHECK), in order.
pub const CHECK_COLUMNS: [&str; 11] = [
    "won",
    "found",
    "holder",
    "version",
    "timestamp",
    "now",
    "won_by",
    "system",
    "timeline",
    "started",
    "durable",
];

/// A column's raw bytes, whatever its type: what [`CheckRow::decode`] hands to
/// [`CheckRow::from_columns`].
struct Raw<'a>(Option<&'a [u8]>);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(
        _: &Type,
        raw: &'a [u8],
    ) -> Result<Raw<'a>, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Some(raw)))
    }

    fn from_sql_null(_: &Type) -> Result<Raw<'a>, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

impl CheckRow {
    /// Decodes one row of the check statement.
    ///
    /// ```no_run
    /// # async fn demo(client: tokio_postgres::Client, check: tokio_postgres::Statement)
    /// # -> Result<(), Box<dyn std::error::Error>> {
    /// let lease_micros = 30_000_000i64;
    /// let row = client.query_one(&check, &[&"report", &"pod-a", &None::<i64>, &lease_micros]).await?;
    /// let row = leadership_tokio::internal::CheckRow::decode(&row)?;
    /// println!("held by {:?}", row.holder);
    /// # Ok(()) }
    /// ```
    pub fn decode(row: &tokio_postgres::Row) -> Result<CheckRow, DecodeError> {
        let column = |column: &'static str| {
            let index = row
                .columns()
                .iter()
                .position(|c| c.name() == column)
                .ok_or_else(|| DecodeError {
                    column,
                    source: "no such column".into(),
                })?;
            let raw: Raw<'_> = row.try_get(index).map_err(|e| DecodeError {
                column,
                source: e.into(),
            })?;
            Ok((row.columns()[index].type_().clone(), raw.0))
        };
        let mut columns = Vec::with_capacity(CHECK_COLUMNS.len());
        for name in CHECK_COLUMNS {
            columns.push(column(name)?);
        }
        let columns: [(Type, Option<&[u8]>); 11] = columns
            .try_into()
            .unwrap_or_else(|_| unreachable!("one entry per column"));
        CheckRow::from_columns(&columns)
    }

    /// Decodes the check's columns from their types and raw binary values (`None` for NULL),
    /// in the order of [`CHECK_COLUMNS`]: the whole of the decoding, testable without a server.
    ///
    /// ```
    /// use leadership_core::DbTime;
    /// use leadership_tokio::internal::CheckRow;
    /// use tokio_postgres::types::Type;
    /// let version = 7i64.to_be_bytes();
    /// let now = 0i64.to_be_bytes();
    /// let timeline = 2i32.to_be_bytes();
    /// let row = CheckRow::from_columns(&[
    ///     (Type::BOOL, Some(&[0][..])),
    ///     (Type::BOOL, Some(&[1][..])),
    ///     (Type::TEXT, Some(&b"pod-b"[..])),
    ///     (Type::INT8, Some(&version[..])),
    ///     (Type::TIMESTAMPTZ, None),
    ///     (Type::TIMESTAMPTZ, Some(&now[..])),
    ///     (Type::TEXT, None),
    ///     (Type::TEXT, Some(&b"7716126914797641258"[..])),
    ///     (Type::INT4, Some(&timeline[..])),
    ///     (Type::TIMESTAMPTZ, Some(&now[..])),
    ///     (Type::BOOL, Some(&[1][..])),
    /// ])?;
    /// assert_eq!(row.holder.as_deref(), Some("pod-b"));
    /// assert_eq!(row.now, DbTime::from_pg_micros(0));
    /// assert_eq!(row.server.system, Some(7716126914797641258));
    /// assert_eq!(row.server.timeline, Some(2));
    /// # Ok::<(), leadership_tokio::internal::DecodeError>(())
    /// ```
    pub fn from_columns(columns: &[(Type, Option<&[u8]>); 11]) -> Result<CheckRow, DecodeError> {
        fn get<'a, T: FromSql<'a>>(
            (ty, raw): &'a (Type, Option<&'a [u8]>),
            column: &'static str,
        ) -> Result<T, DecodeError> {
            if !T::accepts(ty) {
                let source = format!("type {ty} is not {}", std::any::type_name::<T>()).into();
                return Err(DecodeError { column, source });
            }
            T::from_sql_nullable(ty, *raw).map_err(|source| DecodeError { column, source })
        }
        let [won, found, holder, version, timestamp, now, won_by, system, timeline, started, durable] =
            columns;
        // In column order, so an error names the first column that cannot be decoded.
        let (won, found, holder, version, timestamp, now) = (
            get(won, "won")?,
            get(found, "found")?,
            get(holder, "holder")?,
            get(version, "version")?,
            get::<Option<PgTime>>(timestamp, "timestamp")?.map(|t| t.0),
            get::<PgTime>(now, "now")?.0,
        );
        let won_by = match get::<Option<String>>(won_by, "won_by")?.as_deref() {
            None => None,
            Some("created") => Some(WonBy::Created),
            Some("renewed") => Some(WonBy::Renewed),
            Some("took_over") => Some(WonBy::TookOver),
            Some(other) => {
                return Err(DecodeError {
                    column: "won_by",
                    source: format!("unknown value {other:?}").into(),
                })
            }
        };
        let server = Server {
            system: get::<Option<String>>(system, "system")?.and_then(|s| s.parse().ok()),
            timeline: get::<Option<i32>>(timeline, "timeline")?.and_then(|t| u32::try_from(t).ok()),
            started: get::<Option<PgTime>>(started, "started")?.map(|t| t.0),
            durable: get(durable, "durable")?,
            promoted_ago: None,
        };
        Ok(CheckRow {
            won,
            found,
            holder,
            version,
            timestamp,
            now,
            won_by,
            server,
        })
    }

    /// The core's input, borrowing the holder. A row that was not found becomes `row: None`.
    ///
    /// ```
    /// use leadership_core::DbTime;
    /// let row = leadership_tokio::internal::CheckRow {
    ///     won: false, found: false, holder: None, version: None, timestamp: None,
    ///     now: DbTime::UNIX_EPOCH, won_by: None, server: Default::default(),
    /// };
    /// assert!(row.as_input().row.is_none());
    /// ```
    pub fn as_input(&self) -> Checked<'_> {
        Checked {
            won: self.won,
            won_by: self.won_by,
            row: self.found.then_some(Row {
                holder: self.holder.as_deref(),
                version: self.version,
                timestamp: self.timestamp,
            }),
            now: self.now,
            server: Some(self.server),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_names_fit_what_postgresql_keeps() {
        assert_eq!(application_name("pod-a"), "leadership:pod-a");
        assert_eq!(application_name(&"é".repeat(40)).len(), 63);
    }

    #[test]
    fn connection_settings_follow_the_lease_and_keep_what_the_user_set() {
        let config = Config::builder("report", "pod-a")
            .interval(Duration::from_secs(8))
            .build()
            .unwrap();
        assert_eq!(default_connect_timeout(&config), Duration::from_secs(4));
        let mut pg = tokio_postgres::Config::new();
        pg.application_name("mine");
        configure(&mut pg, &config, Duration::from_secs(4));
        assert_eq!(pg.get_application_name(), Some("mine"));
        assert_eq!(pg.get_connect_timeout(), Some(&Duration::from_secs(4)));
        assert_eq!(pg.get_tcp_user_timeout(), Some(&Duration::from_secs(8)));
        assert_eq!(pg.get_keepalives_idle(), Duration::from_secs(4));
        // Writable servers only in a host list, unless the user asked for read-only ones; one
        // host is left as it is (no round trip to ask it).
        use tokio_postgres::config::TargetSessionAttrs;
        assert_eq!(pg.get_target_session_attrs(), TargetSessionAttrs::Any);
        let mut list = tokio_postgres::Config::new();
        list.host("a").host("b");
        configure(&mut list, &config, Duration::from_secs(4));
        assert_eq!(
            list.get_target_session_attrs(),
            TargetSessionAttrs::ReadWrite
        );
        let mut read_only = tokio_postgres::Config::new();
        read_only.target_session_attrs(TargetSessionAttrs::ReadOnly);
        configure(&mut read_only, &config, Duration::from_secs(4));
        assert_eq!(
            read_only.get_target_session_attrs(),
            TargetSessionAttrs::ReadOnly
        );
        let go = Config::builder("report", "pod-a")
            .interval(Duration::from_secs(2))
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        assert_eq!(default_connect_timeout(&go), Duration::from_secs(2));
        let default = Config::builder("report", "pod-a").build().unwrap();
        assert_eq!(default_connect_timeout(&default), Duration::from_secs(5));
    }
}

//! Connection settings: `--url` (or `LEADERSHIP_URL`, `DATABASE_URL`), completed by the
//! standard PG* environment variables as libpq does (what the URL sets wins), the password
//! file (`PGPASSFILE`, else `~/.pgpass`), and TLS from `sslmode`, `sslrootcert`, `sslcert`,
//! `sslkey` or `PGSSL*`. Nothing here formats the settings, so no password can reach an error
//! message or a log.

use std::path::PathBuf;
use std::time::Duration;

use leadership_core::sql::Table;
use leadership_tokio::tls::{RustlsConnector, TlsSettings};
use leadership_tokio::{FlagBuilder, Pooler};

use crate::args::{Connection, PoolerArg};
use crate::exit::{Failure, CONFIG};

/// The database settings for `connection`, reading the environment through `env`: the
/// tokio-postgres configuration and the TLS connector matching its `sslmode`.
pub fn settings(
    connection: &Connection,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(tokio_postgres::Config, RustlsConnector), Failure> {
    let url = connection
        .url
        .clone()
        .or_else(|| env("DATABASE_URL"))
        .unwrap_or_default();
    // The parser's message names the bad option, never the text around it.
    let (mut config, tls) = TlsSettings::from_conn_str(&url, &env)
        .map_err(|e| Failure::new(CONFIG, format!("invalid --url: {e}")))?;
    if config.get_hosts().is_empty() {
        let hosts = env("PGHOST").unwrap_or_else(|| "localhost".into());
        for host in hosts.split(',') {
            if host.starts_with('/') {
                config.host_path(host);
            } else {
                config.host(host);
            }
        }
    }
    if config.get_ports().is_empty() {
        if let Some(ports) = env("PGPORT") {
            for port in ports.split(',') {
                let port = port
                    .parse()
                    .map_err(|_| Failure::new(CONFIG, format!("PGPORT: {port:?} is not a port")))?;
                config.port(port);
            }
        }
    }
    if config.get_user().is_none() {
        if let Some(user) = env("PGUSER").or_else(|| env("USER")) {
            config.user(&user);
        }
    }
    if config.get_dbname().is_none() {
        if let Some(dbname) = env("PGDATABASE") {
            config.dbname(&dbname);
        }
    }
    if config.get_password().is_none() {
        if let Some(password) = env("PGPASSWORD").or_else(|| password_file(&config, &env)) {
            config.password(password);
        }
    }
    if config.get_application_name().is_none() {
        if let Some(name) = env("PGAPPNAME") {
            config.application_name(&name);
        }
    }
    if config.get_connect_timeout().is_none() {
        if let Some(seconds) = env("PGCONNECT_TIMEOUT").and_then(|s| s.parse().ok()) {
            config.connect_timeout(Duration::from_secs(seconds));
        }
    }
    if env("PGSERVICE").is_some() {
        tracing::warn!("PGSERVICE is set, but service files are not supported: use --url");
    }
    let connector = tls.connector()?;
    Ok((config, connector))
}

/// The password for the first host, port, database and user from the password file
/// (`PGPASSFILE`, else `~/.pgpass`; libpq's format `host:port:database:user:password`, `*`
/// matching anything, `\:` and `\\` escaped).
fn password_file(
    config: &tokio_postgres::Config,
    env: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    let path = env("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|home| PathBuf::from(home).join(".pgpass")))?;
    let text = std::fs::read_to_string(path).ok()?;
    let host = match config.get_hosts().first()? {
        tokio_postgres::config::Host::Tcp(host) => host.clone(),
        #[cfg(unix)]
        tokio_postgres::config::Host::Unix(_) => "localhost".to_string(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config.get_user()?.to_string();
    let db = config.get_dbname().unwrap_or(&user).to_string();
    let wanted = [host.as_str(), port.as_str(), db.as_str(), user.as_str()];
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let fields = split_pgpass(line);
            let [h, p, d, u, password] = fields.as_slice() else {
                return None;
            };
            [h, p, d, u]
                .iter()
                .zip(wanted)
                .all(|(field, want)| *field == "*" || *field == want)
                .then(|| password.clone())
        })
}

/// A `.pgpass` line's fields, with `\:` and `\\` unescaped.
fn split_pgpass(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut().expect("one field").push(next);
                }
            }
            ':' => fields.push(String::new()),
            c => fields.last_mut().expect("one field").push(c),
        }
    }
    fields
}

/// The table named by `--table` and `--schema`.
pub fn table(connection: &Connection) -> Result<Table, Failure> {
    let table = match &connection.schema {
        Some(schema) => Table::qualified(schema, &connection.table),
        None => Table::new(&connection.table),
    };
    table.map_err(|e| Failure::new(CONFIG, e.to_string()))
}

/// A builder with the connection's settings: database, table, connect timeout, pooler.
pub fn builder(
    name: &str,
    process: &str,
    connection: &Connection,
    pg: tokio_postgres::Config,
) -> Result<FlagBuilder, Failure> {
    let table = table(connection)?;
    let mut builder = leadership_tokio::Flag::builder(name, process).pg_config(pg);
    builder = match &connection.schema {
        Some(schema) => builder.table_in_schema(schema, table.name()),
        None => builder.table(table.name()),
    };
    if let Some(timeout) = connection.connect_timeout {
        builder = builder.connect_timeout(timeout);
    }
    Ok(builder.pooler(match connection.pooler {
        PoolerArg::Auto => Pooler::Auto,
        PoolerArg::Direct => Pooler::Direct,
        PoolerArg::Session => Pooler::Session,
        PoolerArg::Transaction => Pooler::Transaction,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection(url: Option<&str>) -> Connection {
        Connection {
            url: url.map(str::to_string),
            table: "leadership_flags".into(),
            schema: None,
            connect_timeout: None,
            pooler: PoolerArg::Auto,
        }
    }

    #[test]
    fn the_environment_fills_what_the_url_leaves_out() {
        let env = |k: &str| match k {
            "PGHOST" => Some("db1,db2".to_string()),
            "PGPORT" => Some("6432".to_string()),
            "PGUSER" => Some("envuser".to_string()),
            "PGPASSWORD" => Some("s3cret".to_string()),
            "PGDATABASE" => Some("envdb".to_string()),
            _ => None,
        };
        let (c, _) = settings(&connection(None), env).unwrap();
        assert_eq!(c.get_hosts().len(), 2);
        assert_eq!(c.get_ports(), [6432]);
        assert_eq!(c.get_user(), Some("envuser"));
        assert_eq!(c.get_password(), Some(&b"s3cret"[..]));
        let (c, _) =
            settings(&connection(Some("postgres://urluser@host:5433/urldb")), env).unwrap();
        assert_eq!(
            (c.get_user(), c.get_dbname()),
            (Some("urluser"), Some("urldb"))
        );
        assert_eq!(c.get_ports(), [5433]);
        assert_eq!(
            c.get_password(),
            Some(&b"s3cret"[..]),
            "still from PGPASSWORD"
        );
        let database_url = |k: &str| (k == "DATABASE_URL").then(|| "host=dburl user=u".into());
        let (c, _) = settings(&connection(None), database_url).unwrap();
        assert_eq!(c.get_user(), Some("u"));
    }

    #[test]
    fn the_password_file_gives_the_password_for_the_first_match() {
        let dir = std::env::temp_dir().join(format!("leadership-pgpass-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pgpass");
        std::fs::write(
            &file,
            "# comment\nother:5432:*:u:no\ndb:*:*:u:p\\:w\\\\d\n*:*:*:*:fallback\n",
        )
        .unwrap();
        let env = |k: &str| match k {
            "PGPASSFILE" => Some(file.display().to_string()),
            _ => None,
        };
        let (c, _) = settings(&connection(Some("host=db user=u dbname=x")), env).unwrap();
        assert_eq!(c.get_password(), Some(&b"p:w\\d"[..]));
        let (c, _) = settings(&connection(Some("host=elsewhere user=v")), env).unwrap();
        assert_eq!(c.get_password(), Some(&b"fallback"[..]));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_bad_url_never_echoes_its_password() {
        let e = settings(
            &connection(Some("postgres://u:hunter2@h:notaport/db")),
            |_| None,
        )
        .unwrap_err();
        assert_eq!(e.code, CONFIG);
        assert!(!e.message.contains("hunter2"), "{}", e.message);
        let e = settings(&connection(None), |k| (k == "PGPORT").then(|| "x".into())).unwrap_err();
        assert_eq!(e.code, CONFIG);
        let e = settings(&connection(Some("host=h sslmode=strict")), |_| None).unwrap_err();
        assert_eq!(e.code, CONFIG);
        assert!(e.message.contains("sslmode"), "{}", e.message);
    }
}

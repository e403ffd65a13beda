//! Connection settings: `--url`, completed by the standard PG* environment variables as libpq
//! does (what the URL sets wins). Nothing here formats the settings, so no password can reach
//! an error message or a log.

use std::str::FromStr;
use std::time::Duration;

use leadership_core::sql::Table;

use crate::args::Connection;
use crate::exit::{Failure, CONFIG};

/// The settings for `connection`, reading the environment through `env`.
pub fn pg_config(
    connection: &Connection,
    env: impl Fn(&str) -> Option<String>,
) -> Result<tokio_postgres::Config, Failure> {
    let mut config = match &connection.url {
        // The parser's message names the bad option, never the text around it.
        Some(url) => tokio_postgres::Config::from_str(url)
            .map_err(|e| Failure::new(CONFIG, format!("invalid --url: {e}")))?,
        None => tokio_postgres::Config::new(),
    };
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
    if config.get_password().is_none() {
        if let Some(password) = env("PGPASSWORD") {
            config.password(password);
        }
    }
    if config.get_dbname().is_none() {
        if let Some(dbname) = env("PGDATABASE") {
            config.dbname(&dbname);
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
    Ok(config)
}

/// The table named by `--table` and `--schema`.
pub fn table(connection: &Connection) -> Result<Table, Failure> {
    let table = match &connection.schema {
        Some(schema) => Table::qualified(schema, &connection.table),
        None => Table::new(&connection.table),
    };
    table.map_err(|e| Failure::new(CONFIG, e.to_string()))
}

/// Connects for the one-shot subcommands (`status`, `release`).
pub async fn connect(connection: &Connection) -> Result<tokio_postgres::Client, Failure> {
    let config = pg_config(connection, |k| std::env::var(k).ok())?;
    let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection(url: Option<&str>) -> Connection {
        Connection {
            url: url.map(str::to_string),
            table: "leadership_flags".into(),
            schema: None,
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
        let c = pg_config(&connection(None), env).unwrap();
        assert_eq!(c.get_hosts().len(), 2);
        assert_eq!(c.get_ports(), [6432]);
        assert_eq!(c.get_user(), Some("envuser"));
        assert_eq!(c.get_password(), Some(&b"s3cret"[..]));
        let c = pg_config(&connection(Some("postgres://urluser@host:5433/urldb")), env).unwrap();
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
    }

    #[test]
    fn a_bad_url_never_echoes_its_password() {
        let e = pg_config(
            &connection(Some("postgres://u:hunter2@h:notaport/db")),
            |_| None,
        )
        .unwrap_err();
        assert_eq!(e.code, CONFIG);
        assert!(!e.message.contains("hunter2"), "{}", e.message);
        let e = pg_config(&connection(None), |k| (k == "PGPORT").then(|| "x".into())).unwrap_err();
        assert_eq!(e.code, CONFIG);
    }
}

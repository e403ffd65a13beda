//! Reading the TLS settings: both string forms, the environment, the default files, and errors
//! that never show a password.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tokio_postgres::config::SslMode as PgMode;

use super::conn_str::{split, Setting};
use super::{RootCert, SslMode, TlsError, TlsSettings};

fn no_env(_: &str) -> Option<String> {
    None
}

fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| vars.get(name).cloned()
}

fn parse(conn: &str) -> (tokio_postgres::Config, TlsSettings) {
    TlsSettings::from_conn_str(conn, no_env).unwrap_or_else(|e| panic!("{conn}: {e}"))
}

/// A fresh directory under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "leadership-tls-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// Writes `file` (relative) with `contents` and returns its path.
    fn write(&self, file: &str, contents: &str) -> PathBuf {
        let path = self.0.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn home_env(&self) -> impl Fn(&str) -> Option<String> {
        let home = self.0.to_string_lossy().into_owned();
        move |name| (name == "HOME").then(|| home.clone())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn key_value_string_gives_tls_settings_and_the_rest_to_tokio_postgres() {
    let (pg, tls) = parse(
        "host=db port=5433 user=app password=hunter2 sslmode=verify-full sslrootcert=/etc/ca.pem \
         sslcert=/etc/c.crt sslkey=/etc/c.key dbname=app",
    );
    assert_eq!(tls.mode(), SslMode::VerifyFull);
    assert_eq!(tls.root_cert(), Some(&RootCert::File("/etc/ca.pem".into())));
    assert_eq!(tls.client_cert(), Some(Path::new("/etc/c.crt")));
    assert_eq!(tls.client_key(), Some(Path::new("/etc/c.key")));
    assert_eq!(pg.get_ssl_mode(), PgMode::Require);
    assert_eq!(pg.get_user(), Some("app"));
    assert_eq!(pg.get_password(), Some(&b"hunter2"[..]));
    assert_eq!(pg.get_dbname(), Some("app"));
    assert_eq!(pg.get_ports(), &[5433]);
}

#[test]
fn url_string_gives_tls_settings_and_the_rest_to_tokio_postgres() {
    let (pg, tls) = parse(
        "postgres://app:hunter2@db:5433/app?application_name=x&sslmode=verify-ca\
         &sslrootcert=%2Fetc%2Fmy%20ca.pem&connect_timeout=3",
    );
    assert_eq!(tls.mode(), SslMode::VerifyCa);
    assert_eq!(
        tls.root_cert(),
        Some(&RootCert::File("/etc/my ca.pem".into()))
    );
    assert_eq!(pg.get_ssl_mode(), PgMode::Require);
    assert_eq!(pg.get_application_name(), Some("x"));
    assert_eq!(pg.get_password(), Some(&b"hunter2"[..]));
    assert_eq!(
        pg.get_connect_timeout(),
        Some(&std::time::Duration::from_secs(3))
    );

    let (pg, tls) = parse("postgresql://app@db/app?sslmode=require");
    assert_eq!(tls.mode(), SslMode::Require);
    assert_eq!(pg.get_dbname(), Some("app"));
}

#[test]
fn the_tls_keys_are_cut_out_and_the_rest_is_left_byte_for_byte() {
    let cases = [
        ("host=a sslmode=require user=b", "host=a  user=b"),
        ("sslmode = 'require'host=a", "host=a"),
        (
            "host='a b' sslrootcert='/x y/\\'q' user=c",
            "host='a b'  user=c",
        ),
        ("postgres://u@h/d?sslmode=require", "postgres://u@h/d"),
        (
            "postgres://u@h/d?a=1&sslmode=require&b=2&sslkey=k",
            "postgres://u@h/d?a=1&b=2",
        ),
        // As tokio_postgres: the credentials run to the first `@`, a `?` in them is no query.
        (
            "postgres://u:p?w@h/d?sslmode=require",
            "postgres://u:p?w@h/d",
        ),
        ("postgres://h/d", "postgres://h/d"),
        ("", ""),
    ];
    for (conn, rest) in cases {
        assert_eq!(split(conn).unwrap().rest, rest, "{conn}");
    }
    let quoted = split("sslrootcert='/x y/\\'q'").unwrap();
    assert_eq!(quoted.get(Setting::RootCert), Some("/x y/'q"));
    let (pg, tls) = parse("postgres://u:p?w@h/d?sslmode=require");
    assert_eq!(pg.get_password(), Some(&b"p?w"[..]));
    assert_eq!(tls.mode(), SslMode::Require);
}

#[test]
fn a_repeated_key_takes_its_last_value() {
    let (_, tls) = parse("sslmode=disable host=a sslmode=require");
    assert_eq!(tls.mode(), SslMode::Require);
}

#[test]
fn every_mode_is_read_and_negotiates_as_libpq() {
    let negotiation = [
        (SslMode::Disable, PgMode::Disable),
        (SslMode::Allow, PgMode::Prefer),
        (SslMode::Prefer, PgMode::Prefer),
        (SslMode::Require, PgMode::Require),
        (SslMode::VerifyCa, PgMode::Require),
        (SslMode::VerifyFull, PgMode::Require),
    ];
    for (mode, pg_mode) in negotiation {
        for conn in [
            format!("host=db sslmode={mode} sslrootcert=/ca.pem"),
            format!("postgres://db/?sslmode={mode}&sslrootcert=/ca.pem"),
        ] {
            let (pg, tls) = parse(&conn);
            assert_eq!(tls.mode(), mode, "{conn}");
            assert_eq!(pg.get_ssl_mode(), pg_mode, "{conn}");
        }
    }
}

#[test]
fn without_sslmode_the_mode_is_prefer() {
    let (pg, tls) = parse("host=db");
    assert_eq!(tls.mode(), SslMode::Prefer);
    assert_eq!(pg.get_ssl_mode(), PgMode::Prefer);
    assert_eq!(tls.root_cert(), None);
    assert_eq!(tls.client_cert(), None);
}

#[test]
fn an_unknown_mode_is_refused_naming_the_valid_ones() {
    for conn in [
        "host=db password=hunter2 sslmode=verify_full",
        "postgres://u:hunter2@db/?sslmode=Require",
    ] {
        let err = TlsSettings::from_conn_str(conn, no_env).unwrap_err();
        assert!(matches!(err, TlsError::UnknownMode(_)), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains("disable, allow, prefer, require, verify-ca, verify-full"),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
    }
    let err = TlsSettings::from_conn_str("host=db", env_of(&[("PGSSLMODE", "on")])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "sslmode \"on\" is not one of disable, allow, prefer, require, verify-ca, verify-full"
    );
}

#[test]
fn the_environment_fills_in_what_the_string_does_not_say() {
    let env = env_of(&[
        ("PGSSLMODE", "verify-full"),
        ("PGSSLROOTCERT", "/env/ca.pem"),
        ("PGSSLCERT", "/env/c.crt"),
        ("PGSSLKEY", "/env/c.key"),
    ]);
    let (pg, tls) = TlsSettings::from_conn_str("host=db", &env).unwrap();
    assert_eq!(tls.mode(), SslMode::VerifyFull);
    assert_eq!(pg.get_ssl_mode(), PgMode::Require);
    assert_eq!(tls.root_cert(), Some(&RootCert::File("/env/ca.pem".into())));
    assert_eq!(tls.client_cert(), Some(Path::new("/env/c.crt")));
    assert_eq!(tls.client_key(), Some(Path::new("/env/c.key")));
}

#[test]
fn the_string_wins_over_the_environment() {
    let env = env_of(&[
        ("PGSSLMODE", "verify-full"),
        ("PGSSLROOTCERT", "/env/ca.pem"),
    ]);
    let (pg, tls) =
        TlsSettings::from_conn_str("host=db sslmode=require sslrootcert=/conn/ca.pem", &env)
            .unwrap();
    assert_eq!(tls.mode(), SslMode::Require);
    assert_eq!(pg.get_ssl_mode(), PgMode::Require);
    assert_eq!(
        tls.root_cert(),
        Some(&RootCert::File("/conn/ca.pem".into()))
    );

    let (_, tls) = TlsSettings::from_conn_str("postgres://db/?sslmode=disable", &env).unwrap();
    assert_eq!(tls.mode(), SslMode::Disable);
}

#[test]
fn an_empty_value_means_the_default_and_hides_the_environment() {
    let env = env_of(&[("PGSSLMODE", "verify-full")]);
    let (_, tls) = TlsSettings::from_conn_str("host=db sslmode=''", &env).unwrap();
    assert_eq!(tls.mode(), SslMode::Prefer);
    let env = env_of(&[("PGSSLMODE", "")]);
    let (_, tls) = TlsSettings::from_conn_str("host=db", &env).unwrap();
    assert_eq!(tls.mode(), SslMode::Prefer);
}

#[test]
fn system_roots_mean_verify_full_and_refuse_weaker_modes() {
    let (_, tls) = parse("host=db sslrootcert=system");
    assert_eq!(tls.mode(), SslMode::VerifyFull);
    assert_eq!(tls.root_cert(), Some(&RootCert::System));
    for mode in ["disable", "allow", "prefer", "require", "verify-ca"] {
        let err = TlsSettings::from_conn_str(
            &format!("host=db sslrootcert=system sslmode={mode}"),
            no_env,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("sslmode {mode} may not be used with sslrootcert=system: use verify-full")
        );
    }
}

#[test]
fn verify_ca_without_roots_is_refused_and_verify_full_falls_back_to_the_system() {
    let err = TlsSettings::from_conn_str("host=db sslmode=verify-ca", no_env).unwrap_err();
    assert!(matches!(err, TlsError::NoRootCert), "{err:?}");
    #[cfg(feature = "rustls")]
    {
        let err = TlsSettings::new(SslMode::VerifyCa).connector().unwrap_err();
        assert!(matches!(err, TlsError::NoRootCert), "{err:?}");
    }
    #[cfg(feature = "native-tls")]
    {
        let Err(err) = TlsSettings::new(SslMode::VerifyCa).native_tls_connector() else {
            panic!("verify-ca without roots built a connector");
        };
        assert!(matches!(err, TlsError::NoRootCert), "{err:?}");
    }

    let (_, tls) = parse("host=db sslmode=verify-full");
    assert_eq!(tls.root_cert(), None);
}

#[test]
fn the_default_root_certificate_is_used_when_it_exists() {
    let home = TempDir::new("root");
    let env = home.home_env();
    let err = TlsSettings::from_conn_str("host=db sslmode=verify-ca", &env).unwrap_err();
    assert!(matches!(err, TlsError::NoRootCert), "{err:?}");

    let ca = home.write(".postgresql/root.crt", "");
    for mode in ["prefer", "require", "verify-ca", "verify-full"] {
        let (_, tls) =
            TlsSettings::from_conn_str(&format!("host=db sslmode={mode}"), &env).unwrap();
        assert_eq!(tls.root_cert(), Some(&RootCert::File(ca.clone())), "{mode}");
    }
    let (_, tls) = TlsSettings::from_conn_str("host=db sslmode=disable", &env).unwrap();
    assert_eq!(tls.root_cert(), None);
    let (_, tls) =
        TlsSettings::from_conn_str("host=db sslmode=require sslrootcert=/given.pem", &env).unwrap();
    assert_eq!(tls.root_cert(), Some(&RootCert::File("/given.pem".into())));
}

#[test]
fn a_client_certificate_needs_its_key_and_the_defaults_complete_a_pair() {
    let err = TlsSettings::from_conn_str("host=db sslcert=/c.crt", no_env).unwrap_err();
    assert_eq!(err.to_string(), "sslcert /c.crt given without sslkey");
    let err = TlsSettings::from_conn_str("host=db sslkey=/c.key", no_env).unwrap_err();
    assert_eq!(err.to_string(), "sslkey /c.key given without sslcert");

    let home = TempDir::new("client");
    let env = home.home_env();
    let (_, tls) = TlsSettings::from_conn_str("host=db", &env).unwrap();
    assert_eq!(tls.client_cert(), None);

    let cert = home.write(".postgresql/postgresql.crt", "");
    let err = TlsSettings::from_conn_str("host=db", &env).unwrap_err();
    assert!(
        matches!(err, TlsError::CertWithoutKey(ref c) if *c == cert),
        "{err:?}"
    );

    let key = home.write(".postgresql/postgresql.key", "");
    let (_, tls) = TlsSettings::from_conn_str("host=db", &env).unwrap();
    assert_eq!(tls.client_cert(), Some(cert.as_path()));
    assert_eq!(tls.client_key(), Some(key.as_path()));
    let (_, tls) = TlsSettings::from_conn_str("host=db sslcert=/mine.crt", &env).unwrap();
    assert_eq!(tls.client_cert(), Some(Path::new("/mine.crt")));
    assert_eq!(tls.client_key(), Some(key.as_path()));
    let (_, tls) = TlsSettings::from_conn_str("host=db sslmode=disable", &env).unwrap();
    assert_eq!(tls.client_cert(), None);
}

#[test]
fn unsupported_tls_keys_are_refused_by_name() {
    let err = TlsSettings::from_conn_str("host=db sslcrl=/crl.pem", no_env).unwrap_err();
    assert_eq!(
        err.to_string(),
        "sslcrl is not supported by leadership-tokio: remove it from the connection string"
    );
    let err = TlsSettings::from_conn_str("postgres://db/?sslpassword=hunter2", no_env).unwrap_err();
    assert_eq!(
        err.to_string(),
        "sslpassword is not supported by leadership-tokio: remove it from the connection string"
    );
}

#[test]
fn no_error_shows_the_password() {
    let bad = [
        "host=db password=hunter2 sslmode=bogus",
        "host=db password=hunter2 port=nope",
        "host=db password='hunter2",
        "host=db password=hunter2 sslpassword=hunter2",
        "host=db password=hunter2 sslcert=/c.crt",
        "host=db password=hunter2 colour=blue",
        "host=db password=hunter2 sslrootcert=system sslmode=require",
        "postgres://app:hunter2@db:nope/app",
        "postgres://app:hunter2@db/app?sslmode=bogus",
        "postgres://app:hunter2@db/app?sslrootcert=%FF",
        "postgres://app:hunter2@db/app?colour=blue",
        "postgres://app:hunter2@[db/app",
    ];
    for conn in bad {
        let err = TlsSettings::from_conn_str(conn, no_env).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("hunter2"), "{conn}: {shown}");
    }
}

#[cfg(feature = "rustls")]
#[test]
fn connector_names_the_setting_and_the_file() {
    let dir = TempDir::new("files");
    let missing = dir.0.join("missing.pem");
    let tls = TlsSettings::new(SslMode::VerifyFull).with_root_cert(RootCert::File(missing.clone()));
    let err = tls.connector().unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("sslrootcert {}: ", missing.display())),
        "{err}"
    );
    assert!(matches!(
        err,
        TlsError::File {
            setting: "sslrootcert",
            ..
        }
    ));

    let empty = dir.write("empty.pem", "not a certificate\n");
    let tls = TlsSettings::new(SslMode::Require).with_root_cert(RootCert::File(empty.clone()));
    assert_eq!(
        tls.connector().unwrap_err().to_string(),
        format!(
            "sslrootcert {}: no PEM certificate in the file",
            empty.display()
        )
    );

    let key = dir.write("c.key", "-----BEGIN PRIVATE KEY-----\nsecret\n");
    set_mode(&key, 0o600);
    let tls = TlsSettings::new(SslMode::Require).with_client_cert(&empty, &key);
    assert_eq!(
        tls.connector().unwrap_err().to_string(),
        format!(
            "sslcert {}: no PEM certificate in the file",
            empty.display()
        )
    );
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[cfg(unix)]
#[test]
fn a_key_file_readable_by_others_is_refused() {
    let dir = TempDir::new("perm");
    let key = dir.write("c.key", "");
    set_mode(&key, 0o644);
    let err = super::files::check_key_permissions(&key).unwrap_err();
    assert!(matches!(err, TlsError::KeyPermissions(_)), "{err:?}");
    assert!(err.to_string().contains("0600"), "{err}");
    set_mode(&key, 0o600);
    super::files::check_key_permissions(&key).unwrap();
}

#[test]
fn connectors_without_files_build() {
    for mode in [
        SslMode::Disable,
        SslMode::Allow,
        SslMode::Prefer,
        SslMode::Require,
    ] {
        #[cfg(feature = "rustls")]
        TlsSettings::new(mode).connector().unwrap();
        #[cfg(feature = "native-tls")]
        TlsSettings::new(mode).native_tls_connector().unwrap();
    }
}

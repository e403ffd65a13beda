//! A server that demands TLS, with certificates made by openssl: what connects, what is refused
//! and with which words.

use std::process::Output;

use leadership_pgkit::helpers::psql;
use leadership_pgkit::tls::TlsServer;

const SSL_USED: &str = "select ssl from pg_stat_ssl where pid = pg_backend_pid()";

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn only_tls_connects_and_a_plain_connection_is_refused_with_no_encryption() {
    let s = TlsServer::start().unwrap();
    // The kit's own psql: verify-full against the CA, by IP (127.0.0.1 is a subjectAltName).
    assert_eq!(psql(&s, SSL_USED), "t");

    let require = s
        .psql_command()
        .env("PGSSLMODE", "require")
        .env_remove("PGSSLROOTCERT")
        .args(["-c", SSL_USED])
        .output()
        .unwrap();
    assert!(require.status.success(), "{}", text(&require));
    assert_eq!(text(&require), "t");

    // verify-full by name: localhost is the other subjectAltName.
    let by_name = s
        .psql_command()
        .args(["-h", "localhost", "-c", SSL_USED])
        .output()
        .unwrap();
    assert!(by_name.status.success(), "{}", text(&by_name));

    let plain = s
        .psql_command()
        .env("PGSSLMODE", "disable")
        .args(["-c", "select 1"])
        .output()
        .unwrap();
    assert!(!plain.status.success());
    let refusal = String::from_utf8_lossy(&plain.stderr);
    println!("FACT psql sslmode=disable: {}", refusal.trim());
    let server_says = "FATAL:  no pg_hba.conf entry for host \"127.0.0.1\", user \"postgres\", \
                       database \"postgres\", no encryption";
    assert!(refusal.contains(server_says), "{refusal}");

    // What a driver without TLS (NoTls, libpq's sslmode=prefer falls back to plain) sees.
    let err = postgres::Client::connect(&s.conn_string(), postgres::NoTls)
        .err()
        .expect("refused");
    let db = err.as_db_error().expect("a server error");
    println!(
        "FACT postgres crate with NoTls: {} {} {}",
        db.severity(),
        db.code().code(),
        db.message()
    );
    assert_eq!(db.code().code(), "28000");
    assert_eq!(
        db.message(),
        "no pg_hba.conf entry for host \"127.0.0.1\", user \"postgres\", database \"postgres\", \
         no encryption"
    );

    // verify-full against another CA fails on the certificate, before any hba decision.
    let other = leadership_pgkit::tls::Certs::generate().unwrap();
    let wrong_ca = s
        .psql_command()
        .env("PGSSLROOTCERT", other.ca())
        .args(["-c", "select 1"])
        .output()
        .unwrap();
    assert!(!wrong_ca.status.success());
    let err = String::from_utf8_lossy(&wrong_ca.stderr);
    assert!(err.contains("certificate verify failed"), "{err}");
}

#[test]
fn a_required_client_certificate_is_checked() {
    let s = TlsServer::start_requiring_client_cert().unwrap();
    // The kit's psql sends the client certificate.
    assert_eq!(
        psql(
            &s,
            "select ssl, client_dn from pg_stat_ssl where pid = pg_backend_pid()"
        ),
        "t|/CN=postgres"
    );
    let without = s
        .psql_command()
        .env_remove("PGSSLKEY")
        // Not removed but pointed nowhere: libpq would look in ~/.postgresql/ otherwise.
        .env("PGSSLCERT", "/nonexistent/postgresql.crt")
        .args(["-c", "select 1"])
        .output()
        .unwrap();
    assert!(!without.status.success());
    let err = String::from_utf8_lossy(&without.stderr);
    println!("FACT without a client certificate: {}", err.trim());
    assert!(
        err.contains("connection requires a valid client certificate"),
        "{err}"
    );
}

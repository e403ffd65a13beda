//! TLS against the kit's TLS-only server (`hostssl` lines only, certificates made by openssl in
//! the test): `sslmode=require` and `verify-full` with the CA lead; a plain connection is refused
//! with a message that names TLS; PGSSL* variables work like the URL's parameters.

use std::time::Duration;

use leadership_pgkit::tls::TlsServer;

use crate::common::*;

fn leads(mut child: std::process::Child) {
    let mut lines = Lines::of(&mut child);
    lines.until(Duration::from_secs(20), |l| l["raised"] == true);
    signal(&child, libc::SIGTERM);
    assert_eq!(exit_within(&mut child, Duration::from_secs(10)), Some(0));
}

#[test]
fn watch_leads_over_tls_and_a_plain_login_is_refused_naming_tls() {
    let server = TlsServer::start().unwrap();
    let port = server.port();
    let ca = server.ca_file();
    let url = |host: &str, tls: &str| format!("postgres://postgres@{host}:{port}/postgres?{tls}");

    leads(watch(
        &url("127.0.0.1", "sslmode=require"),
        "t",
        "req",
        &["--interval", "2s"],
    ));
    leads(watch(
        &url(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
        ),
        "t",
        "full",
        &["--interval", "2s"],
    ));
    // The same from the environment, as libpq reads it.
    let child = leadership(&[
        "watch",
        "--url",
        &url("localhost", ""),
        "--name",
        "t",
        "--process",
        "env",
        "--interval",
        "2s",
    ])
    .env("PGSSLMODE", "verify-full")
    .env("PGSSLROOTCERT", &ca)
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    leads(child);

    // verify-full without the CA: the server's certificate is not trusted.
    let o = output(&[
        "status",
        "--url",
        &url("localhost", "sslmode=verify-full"),
        "--timeout",
        "5s",
    ]);
    assert_ne!(o.status.code(), Some(0));

    let o = output(&["status", "--url", &url("127.0.0.1", "sslmode=disable")]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(77), "{stderr}");
    assert!(stderr.contains("TLS"), "the refusal names TLS: {stderr}");
    assert!(
        stderr.contains("sslmode"),
        "and the setting to change: {stderr}"
    );
}

//! `bench ceiling`: the server's ceiling in checks/s (pgbench; no peers).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use leadership_pgkit::pg::PgServer;

/// The server's ceiling of checks/s: pgbench, 64 clients, on `n` flags, with our one prepared
/// statement and with the Go flag's three (lib/pq style: extended protocol, unnamed statements).
/// Leader = the write path (our check with lease 0 takes the row over on every call, a write like
/// a renew; Go's update), follower = the read path.
pub(crate) fn ceiling(pg: &PgServer, sizes: &[usize], secs: u64) -> String {
    let check = leadership_core::sql::Statements::new(
        &leadership_core::sql::Table::new("leadership_flags").unwrap(),
    )
    .check
    .clone();
    let dir = std::env::temp_dir().join(format!("leadership-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let ours = |lease: &str| {
        let stmt = check
            .replace("$1", "(:n)::text")
            .replace("$2", "'p1'")
            .replace("$3", "NULL")
            .replace("$4", lease)
            .replace("$5", "0")
            .replace("$6", "true")
            .replace("$7", "true")
            .replace("$8", "NULL");
        // pgbench wants one statement per line.
        format!(
            "\\set n random(1, :nflags)\n{}\n",
            stmt.split_whitespace().collect::<Vec<_>>().join(" ")
        )
    };
    let go_read = "\\set n random(1, :nflags)\nselect now();\nselect holder, version, timestamp from leadership_flags where name = (:n)::text;\n";
    let go_write = format!(
        "{go_read}update leadership_flags set version = version + 1, timestamp = now() where name = (:n)::text and holder = 'p1' and version >= 0;\n"
    );
    let scripts = [
        ("leadership, leader (write path)", ours("0"), "prepared"),
        (
            "leadership, follower (read path)",
            ours("3600000000"),
            "prepared",
        ),
        ("Go flag, leader (3 statements)", go_write, "extended"),
        (
            "Go flag, follower (2 statements)",
            go_read.to_string(),
            "extended",
        ),
    ];
    let pgbench = PathBuf::from("/usr/lib/postgresql/15/bin/pgbench");
    let mut out = String::from(
        "| flags | script | protocol | checks/s (64 clients) | statements/s |\n|---|---|---|---|---|\n",
    );
    for &n in sizes {
        let _ = pg.psql("delete from leadership_flags");
        let _ = pg.psql(&format!(
            "insert into leadership_flags select i::text, 'p1', 0, now() from generate_series(1, {n}) i"
        ));
        for (label, text, mode) in &scripts {
            let file = dir.join("script.sql");
            std::fs::write(&file, text).unwrap();
            let o = Command::new(&pgbench)
                .args(["-n", "-c", "64", "-j", "2", "-M", mode, "-T"])
                .arg(secs.to_string())
                .arg("-D")
                .arg(format!("nflags={n}"))
                .arg("-f")
                .arg(&file)
                .args(["-h", "127.0.0.1", "-p"])
                .arg(pg.port().to_string())
                .args(["-U", "postgres", "postgres"])
                .output()
                .expect("pgbench");
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let tps: f64 = text
                .lines()
                .find(|l| l.starts_with("tps"))
                .and_then(|l| l.split_whitespace().nth(2)?.parse().ok())
                .unwrap_or(f64::NAN);
            if tps.is_nan() {
                eprintln!(
                    "pgbench failed: {text}\n{}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            let per = if label.contains("leader (3") {
                3.0
            } else if label.starts_with("Go") {
                2.0
            } else {
                1.0
            };
            let _ = writeln!(
                out,
                "| {n} | {label} | {mode} | {tps:.0} | {:.0} |",
                tps * per
            );
        }
    }
    out
}

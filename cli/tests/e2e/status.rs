//! `status --group`: a balanced group's shards grouped by holder.

use leadership_pgkit::pg::PgServer;

use crate::common::*;

#[test]
fn status_groups_a_balanced_groups_shards_by_holder() {
    let pg = PgServer::start().unwrap();
    let url = pg.url();
    // The library creates the table; write the rows as a fleet would have.
    let created = output(&["status", "--url", &url]);
    assert!(created.status.success(), "{created:?}");
    pg.psql(
        "INSERT INTO leadership_flags VALUES \
         ('g/member/a', 'a', 3, now()), ('g/member/b', 'b', 9, now() - interval '1 hour'), \
         ('g/shard/0', 'a', 1, now()), ('g/shard/1', 'a', 1, now()), ('g/shard/2', 'a', 1, now()), \
         ('g/shard/3', 'go-peer', 1, now()), ('g/shard/4', 'b', 1, now() - interval '1 hour'), \
         ('g/shard/5', 'a', 2, '1970-01-01 00:00:00+00'), ('other', 'x', 0, now())",
    )
    .unwrap();
    let out = output(&["status", "--url", &url, "--group", "g", "--interval", "10s"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines,
        [
            vec!["holder", "member", "count", "shards"],
            vec!["a", "live", "3", "0-2"],
            vec!["b", "expired", "0", "-"],
            vec!["go-peer", "none", "1", "3"],
            vec!["(free)", "-", "2", "4-5"],
        ],
        "{text}"
    );
    let out = output(&[
        "status",
        "--url",
        &url,
        "--group",
        "g",
        "--interval",
        "10s",
        "--json",
    ]);
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows[0]["holder"], "a");
    assert_eq!(rows[0]["shards"], serde_json::json!([0, 1, 2]));
    assert_eq!(rows[3]["holder"], serde_json::Value::Null);
    assert_eq!(rows[3]["count"], 2);
}

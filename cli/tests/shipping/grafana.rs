//! `deploy/grafana/leadership.json`: a dashboard Grafana can import (JSON with the fields an
//! import needs), whose every PromQL expression reads only metrics the code exports
//! (`leadership_tokio::metrics::ALL`, the same scan as the rules'), so renaming a metric fails
//! here rather than leaving an empty panel; and it shows what issue 29 asked for.

use std::path::Path;

use leadership_tokio::metrics;
use serde_json::Value;

use super::prometheus::{exported, metric_names};

fn dashboard() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/leadership.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?} is not JSON: {e}"))
}

/// Every panel, those inside collapsed rows too.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        all.push(panel);
        if let Some(inner) = panel["panels"].as_array() {
            all.extend(inner);
        }
    }
    all
}

/// Each query panel's title and PromQL expressions.
fn queries(dashboard: &Value) -> Vec<(String, Vec<String>)> {
    panels(dashboard)
        .into_iter()
        .filter(|p| p["type"] != "row")
        .map(|p| {
            let exprs = p["targets"]
                .as_array()
                .unwrap_or_else(|| panic!("{}: no targets", p["title"]))
                .iter()
                .map(|t| t["expr"].as_str().expect("expr").to_string())
                .collect();
            (p["title"].as_str().unwrap().to_string(), exprs)
        })
        .collect()
}

#[test]
fn the_dashboard_is_importable_json_with_unique_panel_ids() {
    let d = dashboard();
    assert_eq!(d["uid"], "leadership-flags");
    assert!(d["title"].is_string() && d["schemaVersion"].is_u64());
    let mut ids: Vec<u64> = panels(&d)
        .iter()
        .map(|p| p["id"].as_u64().expect("id"))
        .collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "panel ids repeat");
    for p in panels(&d) {
        for key in ["x", "y", "w", "h"] {
            assert!(p["gridPos"][key].is_u64(), "{}: gridPos.{key}", p["title"]);
        }
    }
    // The variables the queries use are defined.
    let variables: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(variables, ["datasource", "flag"]);
}

#[test]
fn every_metric_the_dashboard_queries_is_exported_by_the_code() {
    let d = dashboard();
    let mut used = Vec::new();
    for (title, exprs) in queries(&d) {
        assert!(!exprs.is_empty(), "{title}: no query");
        for expr in exprs {
            let names = metric_names(&expr);
            assert!(!names.is_empty(), "{title}: {expr} reads no metric of ours");
            for name in names {
                assert!(
                    exported(&name),
                    "{title}: {expr} reads {name}, which leadership_tokio::metrics does not export (renamed?)"
                );
                used.push(name);
            }
        }
    }
    // The flag variable's values come from the state gauge.
    let flags = d["templating"]["list"][1]["definition"].as_str().unwrap();
    assert_eq!(metric_names(flags), [metrics::STATE]);
    // What it shows: who leads, renew latency, failures, handovers, balanced shares (and the
    // rest of the metrics, so a new metric is a reminder to chart it).
    for name in metrics::ALL {
        assert!(
            used.iter()
                .any(|u| u == name || u.strip_suffix("_bucket") == Some(name)),
            "the dashboard does not show {name}"
        );
    }
    let titles: Vec<String> = queries(&d).into_iter().map(|(t, _)| t).collect();
    for topic in [
        "Who leads",
        "Renew latency",
        "failures",
        "Handovers",
        "Shards",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(topic)),
            "no panel on {topic}: {titles:?}"
        );
    }
}

#[test]
fn a_renamed_metric_in_a_query_is_caught() {
    let names =
        metric_names(r#"sum by (name) ({__name__=~".+_leadership_flag_states", name=~"$flag"})"#);
    assert_eq!(names, ["leadership_flag_states"]);
    assert!(!exported(&names[0]));
}

//! A picture of a run: one lane per process (leadership bars, fault spans) and one for the
//! database and the network, on a shared time axis.

use std::fmt::Write as _;

use super::report::Report;
use super::trace::{Secs, What, DB};

const WIDTH: f64 = 1400.0;
const LEFT: f64 = 60.0;
const LANE: f64 = 26.0;
const TOP: f64 = 30.0;

/// Renders the report's timeline as an SVG document.
pub fn render(report: &Report) -> String {
    let trace = &report.trace;
    let names = trace.names();
    let end = report.stats.simulated_ns.max(1) as f64;
    let lanes = names.len() + 1;
    let height = TOP + LANE * lanes as f64 + 40.0;
    let x = |t: u64| LEFT + (WIDTH - LEFT - 10.0) * t as f64 / end;
    let lane_y = |who: u16| {
        let i = if who == DB {
            names.len()
        } else {
            usize::from(who)
        };
        TOP + LANE * i as f64
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="monospace" font-size="11">"#
    );
    let _ = writeln!(
        out,
        r#"<text x="4" y="16">seed {} — {} (green: Rust leads, blue: Go raised, orange: paused, red: down, purple: connection fails, grey: database stall / loss / slow)</text>"#,
        report.config.seed,
        escape(&report.config.to_string())
    );
    for (i, name) in names
        .iter()
        .chain(std::iter::once(&"db/net".to_string()))
        .enumerate()
    {
        let y = TOP + LANE * i as f64;
        let _ = writeln!(
            out,
            r##"<rect x="{LEFT}" y="{y}" width="{}" height="{}" fill="#f4f4f4"/><text x="4" y="{}">{}</text>"##,
            WIDTH - LEFT - 10.0,
            LANE - 4.0,
            y + 15.0,
            escape(name)
        );
    }
    let bar = |out: &mut String, who: u16, from: u64, to: u64, color: &str, inset: f64| {
        let y = lane_y(who) + inset;
        let w = (x(to) - x(from)).max(0.8);
        let _ = writeln!(
            out,
            r#"<rect x="{:.2}" y="{y:.2}" width="{w:.2}" height="{:.2}" fill="{color}"><title>{} → {}</title></rect>"#,
            x(from),
            LANE - 4.0 - 2.0 * inset,
            Secs(from),
            Secs(to)
        );
    };
    let mut leading_since = vec![None; names.len()];
    let end_ns = report.stats.simulated_ns;
    for r in trace.notable() {
        let who = usize::from(r.who);
        match r.what {
            What::Leads(true) | What::GoRaised(true) => leading_since[who] = Some(r.t),
            What::Leads(false) | What::GoRaised(false) => {
                if let Some(from) = leading_since[who].take() {
                    let color = if matches!(r.what, What::Leads(_)) {
                        "#2e9e44"
                    } else {
                        "#2f6fd6"
                    };
                    bar(&mut out, r.who, from, r.t, color, 6.0);
                }
            }
            What::Pause(until) => bar(&mut out, r.who, r.t, until.min(end_ns), "#f39c1288", 0.0),
            What::Crash(until) | What::Closed(until) => {
                bar(&mut out, r.who, r.t, until.min(end_ns), "#d6303088", 0.0)
            }
            What::ConnDown(until) => bar(&mut out, r.who, r.t, until.min(end_ns), "#8e44ad66", 0.0),
            What::Stall(until, _) | What::Loss(until, _) | What::Slow(until, _) => {
                bar(&mut out, DB, r.t, until.min(end_ns), "#7f8c8d99", 0.0)
            }
            What::Close | What::Step(_) | What::Anomaly(_) => {
                let _ = writeln!(
                    out,
                    r#"<line x1="{0:.2}" x2="{0:.2}" y1="{1}" y2="{2}" stroke="black"><title>{3:?} at {4}</title></line>"#,
                    x(r.t),
                    lane_y(r.who),
                    lane_y(r.who) + LANE - 4.0,
                    r.what,
                    Secs(r.t)
                );
            }
            _ => {}
        }
    }
    for (who, since) in leading_since.iter().enumerate() {
        if let Some(from) = since {
            let color = if who < report.config.rust_cores() {
                "#2e9e44"
            } else {
                "#2f6fd6"
            };
            bar(&mut out, who as u16, *from, end_ns, color, 6.0);
        }
    }
    if let Some(f) = &report.failure {
        let _ = writeln!(
            out,
            r#"<line x1="{0:.2}" x2="{0:.2}" y1="{1}" y2="{2}" stroke="red" stroke-width="2"><title>{3}</title></line>"#,
            x(f.at),
            TOP - 4.0,
            height - 36.0,
            escape(&f.violation.to_string())
        );
    }
    for k in 0..=10u64 {
        let t = report.stats.simulated_ns / 10 * k;
        let _ = writeln!(
            out,
            r#"<text x="{:.2}" y="{}" text-anchor="middle">{}</text>"#,
            x(t),
            height - 20.0,
            Secs(t)
        );
    }
    out.push_str("</svg>\n");
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

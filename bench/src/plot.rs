//! `bench plot`: the samples of a CSV file drawn as an SVG.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::report::pct;

pub(crate) fn plot(csv: &Path, svg: &Path, labels: &[String]) {
    let text = std::fs::read_to_string(csv).expect("read csv");
    let mut series: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for l in text.lines() {
        let mut p = l.rsplitn(3, ',');
        let (Some(v), Some(imp), Some(label)) = (p.next(), p.next(), p.next()) else {
            continue;
        };
        if !labels.is_empty() && !labels.iter().any(|x| label.contains(x.as_str())) {
            continue;
        }
        if let Ok(v) = v.parse::<f64>() {
            series
                .entry((label.to_string(), imp.to_string()))
                .or_default()
                .push(v);
        }
    }
    let groups: Vec<String> = {
        let mut g: Vec<String> = series.keys().map(|k| k.0.clone()).collect();
        g.dedup();
        g
    };
    let (w, ph) = (720.0, 180.0);
    let h = 40.0 + groups.len() as f64 * (ph + 50.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"10\" y=\"20\" font-size=\"14\">Cumulative distribution of latencies (ms), Go flag vs leadership; one dot per trial</text>\n"
    );
    let colors = [
        ("go", "#d62728"),
        ("tokio", "#1f77b4"),
        ("blocking", "#2ca02c"),
    ];
    for (gi, g) in groups.iter().enumerate() {
        let y0 = 40.0 + gi as f64 * (ph + 50.0);
        let all: Vec<f64> = series
            .iter()
            .filter(|(k, _)| &k.0 == g)
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        let max = all.iter().copied().fold(1.0, f64::max);
        // Log scale when the range is wide.
        let min = all.iter().copied().fold(f64::INFINITY, f64::min).max(0.5);
        let log = max / min > 50.0;
        let xf = |v: f64| {
            let (x0, x1) = (60.0, w - 20.0);
            if log {
                x0 + (v.max(min).ln() - min.ln()) / (max.ln() - min.ln()).max(1e-9) * (x1 - x0)
            } else {
                x0 + v / max * (x1 - x0)
            }
        };
        let _ = writeln!(
            s,
            "<text x=\"10\" y=\"{}\" font-size=\"12\" font-weight=\"bold\">{}</text>",
            y0 + 12.0,
            esc(g)
        );
        let (top, bot) = (y0 + 20.0, y0 + 20.0 + ph - 30.0);
        let _ = writeln!(s, "<line x1=\"60\" y1=\"{bot}\" x2=\"{}\" y2=\"{bot}\" stroke=\"#888\"/><line x1=\"60\" y1=\"{top}\" x2=\"60\" y2=\"{bot}\" stroke=\"#888\"/>", w - 20.0);
        for q in [0.0, 0.5, 1.0] {
            let y = bot - q * (bot - top);
            let _ = writeln!(s, "<text x=\"30\" y=\"{:.1}\">{q}</text>", y + 4.0);
        }
        let ticks: Vec<f64> = if log {
            [1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0]
                .into_iter()
                .filter(|t| *t >= min * 0.99 && *t <= max * 1.01)
                .collect()
        } else {
            (0..=5).map(|i| max * i as f64 / 5.0).collect()
        };
        for t in ticks {
            let x = xf(t);
            let _ = writeln!(
                s,
                "<line x1=\"{x:.1}\" y1=\"{bot}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#888\"/><text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{t:.0}</text>",
                bot + 4.0,
                bot + 16.0
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">ms{}</text>",
            w - 20.0,
            bot + 28.0,
            if log { " (log scale)" } else { "" }
        );
        let mut li = 0.0;
        for ((label, imp), v) in &series {
            if label != g {
                continue;
            }
            let color = colors.iter().find(|c| c.0 == imp).map_or("#555", |c| c.1);
            let mut v = v.clone();
            v.sort_by(|a, b| a.total_cmp(b));
            let n = v.len() as f64;
            let mut path = String::new();
            for (i, x) in v.iter().enumerate() {
                let (px, py) = (xf(*x), bot - (i + 1) as f64 / n * (bot - top));
                let _ = write!(path, "{}{px:.1},{py:.1} ", if i == 0 { "M" } else { "L" });
                let _ = writeln!(
                    s,
                    "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"2\" fill=\"{color}\"/>"
                );
            }
            let _ = writeln!(
                s,
                "<path d=\"{path}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\"/>"
            );
            let mid = pct(&v, 50.0);
            let _ = writeln!(
                s,
                "<text x=\"70\" y=\"{:.1}\" fill=\"{color}\">{imp}: n={} median {mid:.0} ms, max {:.0} ms</text>",
                top + 10.0 + li,
                v.len(),
                v.last().copied().unwrap_or(0.0)
            );
            li += 14.0;
        }
    }
    s.push_str("</svg>\n");
    std::fs::write(svg, s).expect("write svg");
}

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

//! Charts as hand-written SVG: no plotting crate.
//!
//! Owns: a latency-percentile line chart (one line per broker per rate, log-scale y) and a
//! throughput-by-size bar chart (delivery rate of `pubsub` per message size, one bar per
//! broker), drawn from the figures in [`TargetReport`]s (with `suite --runs N`, the
//! merged ones: the medians).
//!
//! Never: reads files or measures; it turns figures into SVG text.

use std::fmt::Write as _;

use crate::report::TargetReport;

const W: f64 = 720.0;
const H: f64 = 400.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 180.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];
const PERCENTILES: [&str; 6] = ["p50", "p90", "p99", "p99.9", "p99.99", "max"];

/// Every chart the reports have data for, as `(file name, svg text)`.
pub fn charts(reports: &[TargetReport]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(svg) = latency_chart(reports) {
        out.push(("latency.svg".to_string(), svg));
    }
    if let Some(svg) = throughput_chart(reports) {
        out.push(("throughput.svg".to_string(), svg));
    }
    out
}

fn header(out: &mut String, title: &str) {
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
        W / 2.0,
        escape(title)
    );
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Latency percentiles (µs, log scale) for every `latency` scenario of every target.
pub fn latency_chart(reports: &[TargetReport]) -> Option<String> {
    let mut series = Vec::new();
    for t in reports {
        for s in t.scenarios.iter().filter(|s| s.scenario == "latency") {
            let pts: Vec<f64> = PERCENTILES
                .iter()
                .filter_map(|p| s.figure(p).map(|f| f.value.max(0.1)))
                .collect();
            if pts.len() == PERCENTILES.len() {
                series.push((
                    format!("{} {}", t.name(), s.label.trim_start_matches("latency ")),
                    pts,
                ));
            }
        }
    }
    if series.is_empty() {
        return None;
    }
    let max = series
        .iter()
        .flat_map(|(_, p)| p.iter().copied())
        .fold(1.0, f64::max);
    let min = series
        .iter()
        .flat_map(|(_, p)| p.iter().copied())
        .fold(max, f64::min);
    let (lo, hi) = (
        min.log10().floor(),
        max.log10().ceil().max(min.log10().floor() + 1.0),
    );
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let x = |i: usize| LEFT + plot_w * i as f64 / (PERCENTILES.len() - 1) as f64;
    let y = |v: f64| TOP + plot_h * (1.0 - (v.log10() - lo) / (hi - lo));
    let mut out = String::new();
    header(
        &mut out,
        "Publish-to-deliver latency (µs, log scale, from intended send time)",
    );
    let mut decade = lo;
    while decade <= hi {
        let v = 10f64.powf(decade);
        let _ = writeln!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y0:.1}\" y2=\"{y0:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT + plot_w,
            LEFT - 6.0,
            y(v) + 4.0,
            crate::report::format_value(v),
            y0 = y(v)
        );
        decade += 1.0;
    }
    for (i, p) in PERCENTILES.iter().enumerate() {
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{p}</text>",
            x(i),
            H - BOTTOM + 18.0
        );
    }
    for (k, (name, pts)) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let path: Vec<String> = pts
            .iter()
            .enumerate()
            .map(|(i, &v)| format!("{:.1},{:.1}", x(i), y(v)))
            .collect();
        let _ = writeln!(
            out,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        let ly = TOP + 16.0 * k as f64;
        let _ = writeln!(
            out,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"12\" height=\"3\" fill=\"{color}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            W - RIGHT + 12.0,
            ly,
            W - RIGHT + 28.0,
            ly + 5.0,
            escape(name)
        );
    }
    out.push_str("</svg>\n");
    Some(out)
}

/// Delivery rate of the 1x1 `pubsub` scenarios by message size, one bar per target.
pub fn throughput_chart(reports: &[TargetReport]) -> Option<String> {
    let mut labels: Vec<String> = Vec::new();
    for t in reports {
        for s in t.scenarios.iter().filter(|s| s.scenario == "pubsub") {
            if !labels.contains(&s.label) {
                labels.push(s.label.clone());
            }
        }
    }
    if labels.is_empty() {
        return None;
    }
    let value = |t: &TargetReport, label: &str| {
        t.scenarios
            .iter()
            .find(|s| s.label == label)
            .and_then(|s| s.figure("delivery rate"))
            .map_or(0.0, |f| f.value)
    };
    let max = reports
        .iter()
        .flat_map(|t| labels.iter().map(move |l| value(t, l)))
        .fold(1.0, f64::max);
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let group_w = plot_w / labels.len() as f64;
    let bar_w = group_w * 0.8 / reports.len().max(1) as f64;
    let mut out = String::new();
    header(&mut out, "pubsub delivery rate by message size (msgs/s)");
    for i in 0..=4 {
        let v = max * i as f64 / 4.0;
        let yv = TOP + plot_h * (1.0 - i as f64 / 4.0);
        let _ = writeln!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{yv:.1}\" y2=\"{yv:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT + plot_w,
            LEFT - 6.0,
            yv + 4.0,
            crate::report::format_value(v)
        );
    }
    for (g, label) in labels.iter().enumerate() {
        let gx = LEFT + group_w * g as f64 + group_w * 0.1;
        for (k, t) in reports.iter().enumerate() {
            let v = value(t, label);
            let h = plot_h * v / max;
            let _ = writeln!(
                out,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{}\"/>",
                gx + bar_w * k as f64,
                TOP + plot_h - h,
                bar_w * 0.95,
                COLORS[k % COLORS.len()]
            );
        }
        let size = label.rsplit(' ').next().unwrap_or(label);
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            gx + group_w * 0.4,
            H - BOTTOM + 18.0,
            escape(size)
        );
    }
    for (k, t) in reports.iter().enumerate() {
        let ly = TOP + 16.0 * k as f64;
        let _ = writeln!(
            out,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"12\" height=\"10\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            W - RIGHT + 12.0,
            ly - 4.0,
            COLORS[k % COLORS.len()],
            W - RIGHT + 28.0,
            ly + 5.0,
            escape(&t.name())
        );
    }
    out.push_str("</svg>\n");
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Better, Figure, ScenarioReport};

    fn target(name: &str) -> TargetReport {
        let lat = ScenarioReport::new(
            "latency",
            "latency 10000/s 128B".into(),
            PERCENTILES
                .iter()
                .enumerate()
                .map(|(i, p)| Figure::new(p, 10.0 * (i + 1) as f64, "µs", Better::Lower))
                .collect(),
            vec![],
            vec![],
            serde_json::Value::Null,
        );
        let tput = ScenarioReport::new(
            "pubsub",
            "pubsub 1x1 16B".into(),
            vec![Figure::new("delivery rate", 1e6, "msgs/s", Better::Higher)],
            vec![],
            vec![],
            serde_json::Value::Null,
        );
        TargetReport {
            target: name.into(),
            address: String::new(),
            protocol: "text".into(),
            version: None,
            scenarios: vec![lat, tput],
        }
    }

    #[test]
    fn both_charts_are_drawn() {
        let charts = charts(&[target("ternd"), target("nats-server")]);
        assert_eq!(charts.len(), 2);
        for (name, svg) in &charts {
            assert!(svg.starts_with("<svg"), "{name}");
            assert!(svg.trim_end().ends_with("</svg>"), "{name}");
            assert!(svg.contains("nats-server"), "{name}");
        }
        assert_eq!(charts[0].1.matches("<polyline").count(), 2);
    }

    #[test]
    fn no_data_no_chart() {
        assert!(charts(&[]).is_empty());
    }
}

//! The simulation's report: a markdown table (one row per run) and an SVG plot of how each
//! run's catalog change spread (fraction of live nodes holding it vs seconds since publication),
//! written by hand so the crate needs no plotting dependency.

use std::fmt::Write;
use std::time::Duration;

use super::Outcome;

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "never".to_string(), |d| format!("{:.2} s", d.as_secs_f64()))
}

/// The spread of the last publication (the measured catalog change).
fn change(o: &Outcome) -> Option<&super::Spread> {
    o.spreads.last()
}

/// Slowest full detection among the crashes (`None` if any crash was never detected everywhere).
pub fn worst_detection(o: &Outcome) -> Option<Duration> {
    o.detections.iter().map(|d| d.all_down).collect::<Option<Vec<_>>>()?.into_iter().max()
}

pub fn mean_detection(o: &Outcome) -> Option<Duration> {
    let all: Vec<Duration> = o.detections.iter().filter_map(|d| d.all_down).collect();
    (!all.is_empty()).then(|| all.iter().sum::<Duration>() / all.len() as u32)
}

pub const TABLE_HEADER: &str = "| nodes | loss | seed | catalog 50 % | 99 % | 100 % | down everywhere (mean / worst of crashes) | false suspicions | false deaths | bytes/node/s (SWIM + AE + pulls) | events | wall |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|";

pub fn table_row(o: &Outcome) -> String {
    let spread = change(o);
    format!(
        "| {} | {:.1} % | {} | {} | {} | {} | {} / {} ({} crashes) | {} | {} | {:.0} ({:.0} + {:.0} + {:.0}) | {} |",
        o.nodes,
        o.loss * 100.0,
        o.seed,
        secs(spread.and_then(|s| s.p50)),
        secs(spread.and_then(|s| s.p99)),
        secs(spread.and_then(|s| s.p100)),
        secs(mean_detection(o)),
        secs(worst_detection(o)),
        o.detections.len(),
        o.false_suspicions,
        o.false_deaths,
        o.bytes_per_node_s(),
        o.swim_bytes_per_node_s,
        o.summary_bytes_per_node_s,
        o.pull_bytes_per_node_s,
        o.events
    )
}

const COLORS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"];

/// Plot geometry: pixels of the canvas and margins, seconds shown on the x axis.
struct Frame {
    w: f64,
    h: f64,
    left: f64,
    top: f64,
    pw: f64,
    ph: f64,
    max_s: f64,
}

impl Frame {
    fn x(&self, s: f64) -> f64 {
        self.left + s.min(self.max_s) / self.max_s * self.pw
    }
    fn y(&self, f: f64) -> f64 {
        self.top + (1.0 - f) * self.ph
    }

    /// Title, grid, axis labels and the target lines (99 % by 2 s, 100 % by 4 s).
    fn axes(&self, out: &mut String) {
        let (w, h, left, top, pw, ph) = (self.w, self.h, self.left, self.top, self.pw, self.ph);
        let _ = writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(out, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
        let _ = writeln!(
            out,
            r#"<text x="{left}" y="18" font-size="14">Catalog change: fraction of live nodes holding it vs seconds since publication</text>"#
        );
        for k in 0..=8 {
            let s = k as f64 * 0.5;
            let _ = writeln!(
                out,
                r##"<line x1="{0}" y1="{top}" x2="{0}" y2="{1}" stroke="#eee"/><text x="{0}" y="{2}" text-anchor="middle">{s}</text>"##,
                self.x(s),
                top + ph,
                top + ph + 16.0
            );
        }
        for k in 0..=4 {
            let f = k as f64 / 4.0;
            let _ = writeln!(
                out,
                r##"<line x1="{left}" y1="{0}" x2="{1}" y2="{0}" stroke="#eee"/><text x="{2}" y="{3}" text-anchor="end">{4}%</text>"##,
                self.y(f),
                left + pw,
                left - 6.0,
                self.y(f) + 4.0,
                k * 25
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">seconds</text>"#,
            left + pw / 2.0,
            h - 10.0
        );
        let _ = writeln!(
            out,
            r##"<line x1="{0}" y1="{top}" x2="{0}" y2="{1}" stroke="#999" stroke-dasharray="4 3"/><line x1="{left}" y1="{2}" x2="{3}" y2="{2}" stroke="#999" stroke-dasharray="4 3"/>"##,
            self.x(2.0),
            top + ph,
            self.y(0.99),
            left + pw
        );
    }
}

/// An SVG of every run's catalog spread curve, with the 2 s / 99 % and 4 s / 100 % targets.
pub fn svg(outcomes: &[Outcome]) -> String {
    let (w, h, left, top, right, bottom) = (760.0, 420.0, 60.0, 30.0, 200.0, 50.0);
    let f = Frame { w, h, left, top, pw: w - left - right, ph: h - top - bottom, max_s: 4.0 };
    let mut out = String::new();
    f.axes(&mut out);
    for (k, o) in outcomes.iter().enumerate() {
        let Some(spread) = change(o) else { continue };
        let color = COLORS[k % COLORS.len()];
        let mut points = format!("{:.1},{:.1}", f.x(0.0), f.y(0.0));
        let mut last = 0.0;
        for (t, frac) in &spread.curve {
            let t = t.as_secs_f64();
            let _ = write!(points, " {:.1},{:.1} {:.1},{:.1}", f.x(t), f.y(last), f.x(t), f.y(*frac));
            last = *frac;
        }
        let _ = write!(points, " {:.1},{:.1}", f.x(f.max_s), f.y(last));
        let _ =
            writeln!(out, r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>"#);
        let ly = top + 20.0 + k as f64 * 18.0;
        let label = format!("{} nodes, {:.0} % loss", o.nodes, o.loss * 100.0);
        let _ = writeln!(
            out,
            r#"<line x1="{0}" y1="{ly}" x2="{1}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{2}" y="{3}">{label}</text>"#,
            w - right + 10.0,
            w - right + 30.0,
            w - right + 36.0,
            ly + 4.0
        );
    }
    out.push_str("</svg>\n");
    out
}

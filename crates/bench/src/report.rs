//! Figures, their references and the Markdown/JSON report.

use serde::Serialize;

/// Where a reference figure comes from.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Measured in this run, on this machine.
    Measured,
    /// Quoted from a publication (not measured here).
    Published,
    /// Computed from documented defaults (not measured here).
    Derived,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Measured => "measured",
            Kind::Published => "published",
            Kind::Derived => "derived",
        }
    }
}

/// A figure to compare shoal's with, in the same unit.
#[derive(Serialize, Debug, Clone)]
pub struct Reference {
    pub name: String,
    pub value: f64,
    pub kind: Kind,
    /// shoal / reference.
    pub ratio: f64,
}

#[derive(Serialize, Debug, Clone)]
pub struct Figure {
    pub scenario: String,
    pub metric: String,
    pub value: f64,
    pub unit: String,
    pub references: Vec<Reference>,
    /// The goal, with its unit (empty: none).
    pub target: String,
    pub samples: usize,
}

impl Figure {
    pub fn new(scenario: &str, metric: &str, value: f64, unit: &str) -> Figure {
        Figure {
            scenario: scenario.into(),
            metric: metric.into(),
            value,
            unit: unit.into(),
            references: Vec::new(),
            target: String::new(),
            samples: 1,
        }
    }

    pub fn target(mut self, target: &str) -> Figure {
        self.target = target.into();
        self
    }

    pub fn samples(mut self, samples: usize) -> Figure {
        self.samples = samples;
        self
    }

    pub fn reference(mut self, name: &str, value: f64, kind: Kind) -> Figure {
        let ratio = if value == 0.0 { f64::NAN } else { self.value / value };
        self.references.push(Reference { name: name.into(), value, kind, ratio });
        self
    }
}

/// The figures of a run and, per scenario, how they were measured.
#[derive(Default, Debug)]
pub struct Report {
    pub figures: Vec<Figure>,
    /// (scenario title, paragraph).
    pub how: Vec<(String, String)>,
}

impl Report {
    pub fn push(&mut self, figure: Figure) {
        eprintln!("    {} | {}: {}", figure.scenario, figure.metric, describe(&figure));
        self.figures.push(figure);
    }

    pub fn how(&mut self, title: &str, text: impl Into<String>) {
        self.how.push((title.into(), text.into()));
    }
}

fn describe(f: &Figure) -> String {
    let mut s = format!("{} {}", num(f.value), f.unit);
    for r in &f.references {
        s.push_str(&format!("; {} {} {} ({}, ratio {:.2})", r.name, num(r.value), f.unit, r.kind.as_str(), r.ratio));
    }
    s
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    percentile(&sorted, 50.0)
}

/// Numbers as a reader wants them: large ones without decimals, small ones with two.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    if v.abs() >= 1000.0 {
        let s = format!("{:.0}", v.abs());
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if v < 0.0 { format!("-{out}") } else { out }
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

pub struct Meta {
    pub command: String,
    pub host: String,
    pub cores: usize,
    pub cpu: String,
    pub profile: &'static str,
    pub quick: bool,
    pub docker: String,
}

pub fn render(report: &Report, meta: &Meta) -> String {
    let mut out = String::new();
    out.push_str("# shoal benchmarks\n\n");
    out.push_str(&format!(
        "Produced by `{}` on {} ({} cores, {}), **{}** build, Docker engine {}{}. Figures are measured on this machine in \
         one run; nothing here is asserted by tests.\n\n",
        meta.command,
        meta.host,
        meta.cores,
        meta.cpu,
        meta.profile,
        meta.docker,
        if meta.quick { ", quick mode (small samples: a smoke check, not a measurement)" } else { "" }
    ));
    if meta.profile != "release" {
        out.push_str(
            "**Debug build**: shoal's own crates are unoptimised; its figures are not representative. \
             Run `cargo build --release --workspace --bins && target/release/shoal-bench` for real figures.\n\n",
        );
    }
    out.push_str(
        "Ratios are shoal / reference in the metric's unit: below 1 is better for times and memory, above 1 for \
         throughputs. References marked *measured* were measured in the same run on the same machine; *published* \
         and *derived* references were **not** measured here (see how each is obtained below).\n\n",
    );
    out.push_str(
        "| scenario | metric | shoal | reference | ratio | target | samples |\n|---|---|---|---|---|---|---|\n",
    );
    for f in &report.figures {
        let references = if f.references.is_empty() {
            "—".to_string()
        } else {
            f.references
                .iter()
                .map(|r| format!("{}: {} {} ({})", r.name, num(r.value), f.unit, r.kind.as_str()))
                .collect::<Vec<_>>()
                .join("<br>")
        };
        let ratios = if f.references.is_empty() {
            "—".to_string()
        } else {
            f.references.iter().map(|r| format!("{:.2}× {}", r.ratio, r.name)).collect::<Vec<_>>().join("<br>")
        };
        out.push_str(&format!(
            "| {} | {} | {} {} | {} | {} | {} | {} |\n",
            f.scenario,
            f.metric,
            num(f.value),
            f.unit,
            references,
            ratios,
            if f.target.is_empty() { "—" } else { &f.target },
            f.samples
        ));
    }
    if !report.how.is_empty() {
        out.push_str("\n## How measured\n");
        for (title, text) in &report.how {
            out.push_str(&format!("\n### {title}\n\n{text}\n"));
        }
    }
    out
}

#[derive(Serialize)]
pub struct JsonReport<'a> {
    pub command: &'a str,
    pub host: &'a str,
    pub cores: usize,
    pub cpu: &'a str,
    pub profile: &'a str,
    pub quick: bool,
    pub docker: &'a str,
    pub figures: &'a [Figure],
}

pub fn json(report: &Report, meta: &Meta) -> serde_json::Result<String> {
    serde_json::to_string_pretty(&JsonReport {
        command: &meta.command,
        host: &meta.host,
        cores: meta.cores,
        cpu: &meta.cpu,
        profile: meta.profile,
        quick: meta.quick,
        docker: &meta.docker,
        figures: &report.figures,
    })
}

//! The results: every figure with its unit, its target and whether the target was met and
//! by how much; written as `results.json` (everything, including the raw measurements of
//! each part) and `results.md` (the tables for the README).

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::error::{BenchError, Result};

/// The sections, in the order the Markdown shows them.
pub const SECTIONS: [(&str, &str); 7] = [
    (
        "throughput",
        "1. Throughput to Pipefy (emulator set up like Pipefy)",
    ),
    ("dry_run", "2. Processing speed and memory (dry run)"),
    (
        "steady_state",
        "3. Steady state (second run, 1 % of rows changed)",
    ),
    ("state", "4. State (the ledger)"),
    ("startup", "5. Start-up and size"),
    ("drift", "6. Drift (a destination read back)"),
    (
        "uploads",
        "7. Attachments from S3 (a large file through sync-scheduled)",
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Goal {
    AtLeast,
    AtMost,
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub goal: Goal,
    pub value: f64,
    /// How the target reads in the table, e.g. `≥ 300 cards/s (90 % of the bound)`.
    pub text: String,
    /// The figure is itself a percentage: the margin is in percentage points, not relative.
    #[serde(default)]
    pub in_points: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub met: bool,
    /// Distance to the target as a share of it: positive when met (that much better than
    /// needed), negative when missed.
    pub margin_pct: f64,
    pub text: String,
}

impl Target {
    pub fn at_least(value: f64, text: impl Into<String>) -> Target {
        Target {
            goal: Goal::AtLeast,
            value,
            text: text.into(),
            in_points: false,
        }
    }

    pub fn at_most(value: f64, text: impl Into<String>) -> Target {
        Target {
            goal: Goal::AtMost,
            value,
            text: text.into(),
            in_points: false,
        }
    }

    /// For figures that are percentages: margins in percentage points.
    pub fn in_points(mut self) -> Target {
        self.in_points = true;
        self
    }

    pub fn judge(&self, value: f64) -> Verdict {
        let margin = if self.in_points {
            match self.goal {
                Goal::AtLeast => value - self.value,
                Goal::AtMost => self.value - value,
            }
        } else if self.value == 0.0 {
            0.0
        } else {
            match self.goal {
                Goal::AtLeast => (value - self.value) / self.value * 100.0,
                Goal::AtMost => (self.value - value) / self.value * 100.0,
            }
        };
        let met = match self.goal {
            Goal::AtLeast => value >= self.value,
            Goal::AtMost => value <= self.value,
        };
        let unit = if self.in_points { "points" } else { "%" };
        let text = match (met, self.goal) {
            (true, Goal::AtLeast) => format!("met, {:.1} {unit} above", margin.abs()),
            (true, Goal::AtMost) => format!("met, {:.1} {unit} below", margin.abs()),
            (false, Goal::AtLeast) => format!("**missed**, {:.1} {unit} short", margin.abs()),
            (false, Goal::AtMost) => format!("**missed**, {:.1} {unit} over", margin.abs()),
        };
        Verdict {
            met,
            margin_pct: margin,
            text,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub section: String,
    pub id: String,
    pub name: String,
    /// `None`: not measured (see `note`).
    pub value: Option<f64>,
    pub unit: String,
    pub display: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Shown in the section's figure table of the Markdown (false: only in the JSON, when
    /// the section shows it in a table of its own).
    #[serde(skip)]
    pub in_table: bool,
}

impl Figure {
    pub fn new(
        section: &str,
        id: impl Into<String>,
        name: impl Into<String>,
        value: f64,
        unit: &str,
    ) -> Figure {
        Figure {
            section: section.to_string(),
            id: id.into(),
            name: name.into(),
            value: Some(value),
            unit: unit.to_string(),
            display: format!("{} {unit}", fmt_num(value)),
            target: None,
            verdict: None,
            note: None,
            in_table: true,
        }
    }

    /// A figure that could not be measured in this run, and why.
    pub fn missing(
        section: &str,
        id: impl Into<String>,
        name: impl Into<String>,
        unit: &str,
        why: impl Into<String>,
    ) -> Figure {
        Figure {
            section: section.to_string(),
            id: id.into(),
            name: name.into(),
            value: None,
            unit: unit.to_string(),
            display: "not measured".into(),
            target: None,
            verdict: None,
            note: Some(why.into()),
            in_table: true,
        }
    }

    pub fn target(mut self, target: Target) -> Figure {
        self.verdict = self.value.map(|v| target.judge(v));
        self.target = Some(target);
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Figure {
        self.note = Some(note.into());
        self
    }

    /// Only in the JSON: the section's own table shows it.
    pub fn hidden(mut self) -> Figure {
        self.in_table = false;
        self
    }

    pub fn display(mut self, display: impl Into<String>) -> Figure {
        self.display = display.into();
        self
    }
}

/// A number as people read it: thousands separated, a sensible number of decimals.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let abs = v.abs();
    let decimals = if abs >= 100.0 || v.fract() == 0.0 {
        0
    } else if abs >= 10.0 {
        1
    } else if abs >= 1.0 {
        2
    } else {
        3
    };
    let text = format!("{v:.decimals$}");
    let (int_part, frac) = match text.split_once('.') {
        Some((i, f)) => (i.to_string(), Some(f.to_string())),
        None => (text.clone(), None),
    };
    let (sign, digits) = match int_part.strip_prefix('-') {
        Some(d) => ("-", d.to_string()),
        None => ("", int_part),
    };
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    match frac {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

pub const MIB: f64 = 1024.0 * 1024.0;

#[derive(Debug, Default, Serialize)]
pub struct Results {
    pub generated_at: String,
    pub environment: serde_json::Value,
    pub parameters: serde_json::Value,
    pub figures: Vec<Figure>,
    /// Raw measurements of each part, by section id.
    pub details: serde_json::Map<String, serde_json::Value>,
    /// What a reader must know to read the figures right, by section id.
    pub notes: Vec<(String, String)>,
    /// Parts that failed, by section id.
    pub errors: Vec<(String, String)>,
    /// Extra Markdown tables, by section id.
    #[serde(skip)]
    pub tables: Vec<(String, String)>,
}

impl Results {
    pub fn push(&mut self, figure: Figure) {
        self.figures.push(figure);
    }

    pub fn note(&mut self, section: &str, text: impl Into<String>) {
        self.notes.push((section.to_string(), text.into()));
    }

    pub fn error(&mut self, section: &str, e: &BenchError) {
        tracing::error!(section, error = %e, "bench part failed");
        self.errors.push((section.to_string(), e.to_string()));
    }

    pub fn table(&mut self, section: &str, markdown: String) {
        self.tables.push((section.to_string(), markdown));
    }

    pub fn detail(&mut self, section: &str, value: serde_json::Value) {
        self.details.insert(section.to_string(), value);
    }

    pub fn write(&self, out: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self)?;
        let json_path = out.join("results.json");
        std::fs::write(&json_path, json)
            .map_err(BenchError::io(format!("writing {}", json_path.display())))?;
        let md_path = out.join("results.md");
        std::fs::write(&md_path, self.markdown())
            .map_err(BenchError::io(format!("writing {}", md_path.display())))?;
        Ok(())
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "## Benchmarks\n");
        let env = &self.environment;
        let _ = writeln!(
            md,
            "Measured by `make bench` on {} ({} CPUs, {}), {} build, {}. Targets are not enforced by tests.\n",
            env.get("cpu_model").and_then(|v| v.as_str()).unwrap_or("?"),
            env.get("cpus").and_then(|v| v.as_u64()).unwrap_or(0),
            env.get("kernel").and_then(|v| v.as_str()).unwrap_or("?"),
            env.get("profile").and_then(|v| v.as_str()).unwrap_or("?"),
            self.generated_at,
        );
        for (id, title) in SECTIONS {
            let figures: Vec<&Figure> = self
                .figures
                .iter()
                .filter(|f| f.section == id && f.in_table)
                .collect();
            let tables: Vec<&String> = self
                .tables
                .iter()
                .filter(|(s, _)| s == id)
                .map(|(_, t)| t)
                .collect();
            let notes: Vec<&String> = self
                .notes
                .iter()
                .filter(|(s, _)| s == id)
                .map(|(_, n)| n)
                .collect();
            let errors: Vec<&String> = self
                .errors
                .iter()
                .filter(|(s, _)| s == id)
                .map(|(_, n)| n)
                .collect();
            if figures.is_empty() && tables.is_empty() && notes.is_empty() && errors.is_empty() {
                continue;
            }
            let _ = writeln!(md, "### {title}\n");
            if !figures.is_empty() {
                let _ = writeln!(md, "| Figure | Value | Target | Result |");
                let _ = writeln!(md, "|---|---:|---|---|");
                for f in figures {
                    let target = f.target.as_ref().map(|t| t.text.as_str()).unwrap_or("");
                    let result = match (&f.verdict, &f.note, f.value) {
                        (Some(v), _, _) => v.text.clone(),
                        (None, Some(n), None) => n.clone(),
                        _ => String::new(),
                    };
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} | {} |",
                        f.name, f.display, target, result
                    );
                }
                let _ = writeln!(md);
            }
            for t in tables {
                let _ = writeln!(md, "{t}");
            }
            for f in self
                .figures
                .iter()
                .filter(|f| f.section == id && f.in_table && f.value.is_some())
            {
                if let Some(n) = &f.note {
                    let _ = writeln!(md, "- {}: {n}", f.name);
                }
            }
            for n in notes {
                let _ = writeln!(md, "- {n}");
            }
            for e in errors {
                let _ = writeln!(md, "- **Not measured, the part failed:** {e}");
            }
            let _ = writeln!(md);
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_both_directions_with_margins() {
        let v = Target::at_least(300.0, "").judge(330.0);
        assert!(v.met);
        assert!((v.margin_pct - 10.0).abs() < 1e-9);
        let v = Target::at_least(300.0, "").judge(150.0);
        assert!(!v.met);
        assert!((v.margin_pct + 50.0).abs() < 1e-9);
        let v = Target::at_most(64.0, "").judge(48.0);
        assert!(v.met && (v.margin_pct - 25.0).abs() < 1e-9);
        let v = Target::at_most(64.0, "").judge(96.0);
        assert!(!v.met && v.text.contains("50.0 % over"));
        let v = Target::at_most(10.0, "").in_points().judge(11.5);
        assert!(!v.met && v.text.contains("1.5 points over"));
        let v = Target::at_least(90.0, "").in_points().judge(97.5);
        assert!(v.met && (v.margin_pct - 7.5).abs() < 1e-9);
    }

    #[test]
    fn formats_numbers_for_people() {
        assert_eq!(fmt_num(1_234_567.8), "1,234,568");
        assert_eq!(fmt_num(-4321.0), "-4,321");
        assert_eq!(fmt_num(42.25), "42.2");
        assert_eq!(fmt_num(4.12345), "4.12");
        assert_eq!(fmt_num(0.01234), "0.012");
        assert_eq!(fmt_num(0.0), "0");
        assert_eq!(fmt_num(25.0), "25");
    }

    #[test]
    fn markdown_lists_targets_and_missing_figures() {
        let mut r = Results::default();
        r.push(
            Figure::new("throughput", "a", "Cards per second", 320.0, "cards/s")
                .target(Target::at_least(300.0, "≥ 300 cards/s")),
        );
        r.push(Figure::missing(
            "startup",
            "zip",
            "Zip size",
            "MiB",
            "skipped: BENCH_SKIP_BUILD=1",
        ));
        let md = r.markdown();
        assert!(
            md.contains("| Cards per second | 320 cards/s | ≥ 300 cards/s | met, 6.7 % above |")
        );
        assert!(md.contains("| Zip size | not measured |  | skipped: BENCH_SKIP_BUILD=1 |"));
        assert!(!md.contains("Steady state"));
    }
}

//! What a part of the benchmark reports: tables of figures and target lines,
//! printed to the terminal and written to `BENCHMARKS.md`.

use std::fmt::Write as _;

/// One table of figures, with the notes that say how they were taken.
pub struct Section {
    pub title: String,
    pub notes: Vec<String>,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Section {
    pub fn new(title: &str, header: &[&str]) -> Section {
        Section {
            title: title.to_owned(),
            notes: Vec::new(),
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The section as Markdown: a heading, its notes and a table.
    pub fn markdown(&self) -> String {
        let mut out = format!("### {}\n\n", self.title);
        for note in &self.notes {
            let _ = writeln!(out, "{note}\n");
        }
        let _ = writeln!(out, "| {} |", self.header.join(" | "));
        let _ = writeln!(
            out,
            "|{}",
            self.header.iter().map(|_| " --- |").collect::<String>()
        );
        for row in &self.rows {
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        out
    }

    /// The section as plain text for the terminal, columns aligned.
    pub fn text(&self) -> String {
        let columns = self.header.len();
        let mut widths = vec![0; columns];
        for row in std::iter::once(&self.header).chain(&self.rows) {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line = |row: &[String]| {
            row.iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = widths[i.min(columns - 1)]))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        };
        let mut out = format!("== {}\n", self.title);
        let _ = writeln!(out, "{}", line(&self.header));
        for row in &self.rows {
            let _ = writeln!(out, "{}", line(row));
        }
        out
    }
}

/// One target of the performance issue, measured in this run.
pub struct Target {
    /// What is compared, e.g. "denied preflight vs bare XDP_DROP".
    pub what: String,
    /// The bound, e.g. "<= 4x".
    pub bound: String,
    /// The measured figure, e.g. "3.2x".
    pub measured: String,
    pub met: bool,
}

impl Target {
    /// A ratio that must not exceed `bound`.
    pub fn ratio_at_most(what: impl Into<String>, measured: f64, bound: f64) -> Target {
        Target {
            what: what.into(),
            bound: format!("<= {bound}x"),
            measured: ratio(measured),
            met: measured <= bound,
        }
    }

    pub fn line(&self) -> String {
        format!(
            "{}: {} (target {}): {}",
            self.what,
            self.measured,
            self.bound,
            if self.met { "met" } else { "NOT MET" }
        )
    }
}

/// What one part of the benchmark found.
#[derive(Default)]
pub struct Part {
    pub sections: Vec<Section>,
    pub targets: Vec<Target>,
}

/// A ratio as printed: two decimals.
pub fn ratio(x: f64) -> String {
    format!("{x:.2}x")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_target_is_met_up_to_its_bound_and_not_past_it() {
        let at = Target::ratio_at_most("x vs bare", 1.3, 1.3);
        assert!(at.met);
        assert_eq!(at.line(), "x vs bare: 1.30x (target <= 1.3x): met");
        let past = Target::ratio_at_most("x vs bare", 1.301, 1.3);
        assert!(!past.met);
        assert!(past.line().ends_with("NOT MET"), "{}", past.line());
    }
}

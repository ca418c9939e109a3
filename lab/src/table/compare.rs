//! An observed table held against the expected one: the cells that differ, the cells not
//! probed, and the observed table printed in the expected one's layout.

use super::{BLOCKED, CONNECTS, Table, layout};

/// One cell whose observation differs from the expectation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub from: String,
    pub to: String,
    /// True when the connection should have succeeded (and was blocked).
    pub expected: bool,
}

/// An observed table held against the expected one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Comparison {
    expected: Table,
    /// `observed[row][column]`, `None` where the cell was not probed.
    observed: Vec<Vec<Option<bool>>>,
    mismatches: Vec<Mismatch>,
    skipped: Vec<(String, String)>,
}

/// Holds `observed(row, column)` (`Some(true)` connected, `Some(false)` blocked, `None` not
/// probed) against every cell of `expected`. The diagonal is asked too, only to be shown.
pub fn compare(expected: &Table, observed: &dyn Fn(&str, &str) -> Option<bool>) -> Comparison {
    let (mut mismatches, mut skipped) = (Vec::new(), Vec::new());
    let mut cells = Vec::with_capacity(expected.rows.len());
    for row in &expected.rows {
        let mut line = Vec::with_capacity(expected.columns.len());
        for column in &expected.columns {
            let seen = observed(row, column);
            match (expected.expected(row, column), seen) {
                (None, _) => {} // the diagonal
                (Some(_), None) => skipped.push((row.clone(), column.clone())),
                (Some(want), Some(got)) if want != got => {
                    let (from, to) = (row.clone(), column.clone());
                    mismatches.push(Mismatch {
                        from,
                        to,
                        expected: want,
                    });
                }
                (Some(_), Some(_)) => {}
            }
            line.push(seen);
        }
        cells.push(line);
    }
    Comparison {
        expected: expected.clone(),
        observed: cells,
        mismatches,
        skipped,
    }
}

impl Comparison {
    /// Cells whose observation differs from the expectation, row by row.
    pub fn mismatches(&self) -> &[Mismatch] {
        &self.mismatches
    }

    /// Compared cells that were not probed, as (row, column).
    pub fn skipped(&self) -> &[(String, String)] {
        &self.skipped
    }

    /// True when every compared cell was probed and matched.
    pub fn is_match(&self) -> bool {
        self.mismatches.is_empty() && self.skipped.is_empty()
    }

    /// What was observed for `row` to `column`.
    pub fn observed(&self, row: &str, column: &str) -> Option<bool> {
        let r = self.expected.rows.iter().position(|name| name == row)?;
        let c = self
            .expected
            .columns
            .iter()
            .position(|name| name == column)?;
        self.observed[r][c]
    }

    /// The observed table in the layout of the expected one, each differing cell marked with
    /// `*`, then a legend line.
    pub fn render(&self) -> String {
        let table = &self.expected;
        let cells = table
            .rows
            .iter()
            .zip(&self.observed)
            .map(|(row, observed)| {
                let cells = table.columns.iter().zip(observed).map(|(column, seen)| {
                    let symbol = match seen {
                        Some(true) => CONNECTS,
                        Some(false) => BLOCKED,
                        None if row == column => "-",
                        None => "?",
                    };
                    let want = table.expected(row, column);
                    let differs = matches!((want, seen), (Some(want), Some(got)) if want != *got);
                    format!("{symbol}{}", if differs { "*" } else { "" })
                });
                cells.collect()
            });
        let mut text = layout(&table.columns, &table.rows, cells.collect());
        text.push_str(
            "(observed: . connected, X blocked; * differs from expected: X* should connect, .* \
             should be blocked; ? not probed; - diagonal not probed)\n",
        );
        if !self.mismatches.is_empty() || !self.skipped.is_empty() {
            let (wrong, skipped) = (self.mismatches.len(), self.skipped.len());
            text.push_str(&format!("{wrong} cells differ, {skipped} not probed\n"));
        }
        text
    }
}

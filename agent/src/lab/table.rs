//! Truth tables in the layout the upstream e2e netpol suite prints: a header of destinations
//! (its first token a placeholder), then one line per source with `.` (must connect) or `X`
//! (must fail) per destination. Cells on the diagonal (a pod to itself) are never compared.

use std::{collections::BTreeSet, fmt, str::FromStr};

use crate::cluster::ObjectKey;

/// Table names of hosts outside the cluster start with this: `world/ext1`.
pub const WORLD: &str = "world";

const CONNECTS: &str = ".";
const BLOCKED: &str = "X";

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("the table is empty (expected a header line of destinations and a line per source)")]
    Empty,
    #[error("the header line lists no destinations after its placeholder")]
    NoColumns,
    #[error("the table has a header but no source rows")]
    NoRows,
    #[error("row {row} has {found} cells but the header has {expected} columns")]
    Ragged {
        row: String,
        found: usize,
        expected: usize,
    },
    #[error("row {row}, column {column}: unknown symbol {symbol:?} (expected . or X)")]
    UnknownSymbol {
        row: String,
        column: String,
        symbol: String,
    },
    #[error("column {name} appears twice")]
    DuplicateColumn { name: String },
    #[error("row {name} appears twice")]
    DuplicateRow { name: String },
    #[error("{name:?} is neither namespace/pod nor {WORLD}/NAME")]
    BadName { name: String },
    #[error("row {row}, column {column}: there are no cells between two externals")]
    ExternalToExternal { row: String, column: String },
}

/// What a row or column names.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Endpoint {
    Pod(ObjectKey),
    /// A host outside the cluster, by its name in the case's `externals`.
    External(String),
}

impl FromStr for Endpoint {
    type Err = TableError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let bad = || TableError::BadName {
            name: name.to_owned(),
        };
        let (namespace, pod) = name.split_once('/').ok_or_else(bad)?;
        let valid = |part: &str| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        };
        if !valid(namespace) || !valid(pod) {
            return Err(bad());
        }
        Ok(if namespace == WORLD {
            Self::External(pod.to_owned())
        } else {
            Self::Pod(ObjectKey::new(namespace, pod))
        })
    }
}

/// An expected truth table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<String>,
    /// `cells[row][column]`: true when the connection must succeed. The diagonal is kept as
    /// written, so that the table prints back unchanged, but never read as an expectation.
    cells: Vec<Vec<bool>>,
}

impl Table {
    /// `Some(true)` when `row` must reach `column`, `Some(false)` when it must not, `None` on
    /// the diagonal or for a name the table does not hold.
    pub fn expected(&self, row: &str, column: &str) -> Option<bool> {
        if row == column {
            return None;
        }
        let r = self.rows.iter().position(|name| name == row)?;
        let c = self.columns.iter().position(|name| name == column)?;
        Some(self.cells[r][c])
    }

    /// Every compared cell as (row, column, must connect), row by row.
    pub fn cells(&self) -> impl Iterator<Item = (&str, &str, bool)> {
        self.rows
            .iter()
            .zip(&self.cells)
            .flat_map(move |(row, cells)| {
                self.columns
                    .iter()
                    .zip(cells)
                    .filter(move |(column, _)| *column != row)
                    .map(move |(column, connects)| (row.as_str(), column.as_str(), *connects))
            })
    }
}

impl FromStr for Table {
    type Err = TableError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut lines = text
            .lines()
            .map(str::split_whitespace)
            .filter(|l| l.clone().next().is_some());
        let mut header = lines.next().ok_or(TableError::Empty)?;
        header.next(); // the placeholder
        let columns: Vec<String> = header.map(str::to_owned).collect();
        if columns.is_empty() {
            return Err(TableError::NoColumns);
        }
        let (mut rows, mut cells) = (Vec::new(), Vec::new());
        for mut line in lines {
            let row = line.next().unwrap_or_default().to_owned();
            let symbols: Vec<&str> = line.collect();
            if symbols.len() != columns.len() {
                let (found, expected) = (symbols.len(), columns.len());
                return Err(TableError::Ragged {
                    row,
                    found,
                    expected,
                });
            }
            let parsed = symbols
                .iter()
                .zip(&columns)
                .map(|(symbol, column)| match *symbol {
                    CONNECTS => Ok(true),
                    BLOCKED => Ok(false),
                    _ => Err(TableError::UnknownSymbol {
                        row: row.clone(),
                        column: column.clone(),
                        symbol: (*symbol).to_owned(),
                    }),
                });
            cells.push(parsed.collect::<Result<Vec<_>, _>>()?);
            rows.push(row);
        }
        if rows.is_empty() {
            return Err(TableError::NoRows);
        }
        let table = Self {
            columns,
            rows,
            cells,
        };
        table.check_names()?;
        Ok(table)
    }
}

impl Table {
    fn check_names(&self) -> Result<(), TableError> {
        let mut seen = BTreeSet::new();
        for name in &self.columns {
            if !seen.insert(name) {
                return Err(TableError::DuplicateColumn { name: name.clone() });
            }
        }
        let mut seen = BTreeSet::new();
        for name in &self.rows {
            if !seen.insert(name) {
                return Err(TableError::DuplicateRow { name: name.clone() });
            }
        }
        let is_external = |name: &String| -> Result<bool, TableError> {
            Ok(matches!(name.parse::<Endpoint>()?, Endpoint::External(_)))
        };
        let mut external_columns = Vec::new();
        for column in &self.columns {
            if is_external(column)? {
                external_columns.push(column);
            }
        }
        for row in &self.rows {
            if !is_external(row)? {
                continue;
            }
            if let Some(column) = external_columns.iter().find(|column| **column != row) {
                let (row, column) = (row.clone(), (*column).clone());
                return Err(TableError::ExternalToExternal { row, column });
            }
        }
        Ok(())
    }
}

/// The expected table as the case gives it.
pub fn render_plain(table: &Table) -> String {
    let cells = table.cells.iter().map(|row| {
        row.iter()
            .map(|connects| if *connects { CONNECTS } else { BLOCKED }.to_owned())
            .collect()
    });
    layout(&table.columns, &table.rows, cells.collect())
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&render_plain(self))
    }
}

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

/// Lines of cells left-aligned under each column's name, two spaces apart; the first column
/// as wide as the widest row name.
fn layout(columns: &[String], rows: &[String], cells: Vec<Vec<String>>) -> String {
    let first = rows.iter().map(String::len).chain([1]).max().unwrap_or(1);
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(c, name)| {
            cells
                .iter()
                .map(|row| row[c].len())
                .chain([name.len()])
                .max()
                .unwrap_or(1)
        })
        .collect();
    let line = |head: &str, items: &mut dyn Iterator<Item = &String>| {
        let mut text = format!("{head:first$}");
        for (item, width) in items.zip(&widths) {
            text.push_str(&format!("  {item:width$}"));
        }
        text.truncate(text.trim_end().len());
        text.push('\n');
        text
    };
    let mut text = line("-", &mut columns.iter());
    for (row, cells) in rows.iter().zip(&cells) {
        text.push_str(&line(row, &mut cells.iter()));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
-    x/a  x/b  y/a
x/a  .    X    .
x/b  .    .    .
y/a  X    X    .
";

    fn table(text: &str) -> Table {
        match text.parse() {
            Ok(table) => table,
            Err(error) => panic!("{error}"),
        }
    }

    fn parse_error(text: &str) -> TableError {
        match text.parse::<Table>() {
            Ok(table) => panic!("expected an error, got {table:?}"),
            Err(error) => error,
        }
    }

    #[test]
    fn cells_read_as_must_connect_or_must_fail() {
        let table = table(TABLE);
        assert_eq!(table.columns, ["x/a", "x/b", "y/a"]);
        assert_eq!(table.rows, ["x/a", "x/b", "y/a"]);
        assert_eq!(table.expected("x/a", "x/b"), Some(false));
        assert_eq!(table.expected("y/a", "x/a"), Some(false));
        assert_eq!(table.expected("x/b", "y/a"), Some(true));
        assert_eq!(table.expected("x/a", "z/z"), None);
    }

    #[test]
    fn diagonal_cells_are_ignored_whatever_they_say() {
        let table = table("- x/a x/b\nx/a X .\nx/b . X\n");
        assert_eq!(table.expected("x/a", "x/a"), None);
        assert_eq!(table.cells().count(), 2);
    }

    #[test]
    fn rows_may_differ_from_columns() {
        let table = table("- y/a world/ext1\nx/a . X\nx/b X .\n");
        assert_eq!(table.expected("x/b", "world/ext1"), Some(true));
        assert_eq!(table.cells().collect::<Vec<_>>().len(), 4);
    }

    #[test]
    fn ragged_row_is_an_error_naming_the_row() {
        let error = parse_error("- x/a x/b\nx/a . .\nx/b .\n");
        assert_eq!(
            error.to_string(),
            "row x/b has 1 cells but the header has 2 columns"
        );
    }

    #[test]
    fn unknown_symbol_is_an_error_naming_the_cell() {
        let error = parse_error("- x/a x/b\nx/a . o\nx/b . .\n");
        assert_eq!(
            error.to_string(),
            "row x/a, column x/b: unknown symbol \"o\" (expected . or X)"
        );
    }

    #[test]
    fn duplicate_names_are_errors() {
        assert!(matches!(
            parse_error("- x/a x/a\nx/a . .\n"),
            TableError::DuplicateColumn { .. }
        ));
        assert!(matches!(
            parse_error("- x/a\nx/a .\nx/a .\n"),
            TableError::DuplicateRow { .. }
        ));
    }

    #[test]
    fn names_must_be_namespace_slash_pod_or_world_slash_name() {
        assert!(matches!(
            parse_error("- a\nx/a .\n"),
            TableError::BadName { .. }
        ));
        assert!(matches!(
            parse_error("- x/a\nx/a/b .\n"),
            TableError::BadName { .. }
        ));
        assert!(matches!(
            parse_error("- x/A\nx/a .\n"),
            TableError::BadName { .. }
        ));
        assert_eq!("world/ext1".parse(), Ok(Endpoint::External("ext1".into())));
        assert_eq!("x/a".parse(), Ok(Endpoint::Pod(ObjectKey::new("x", "a"))));
    }

    #[test]
    fn there_are_no_cells_between_two_externals() {
        let error = parse_error("- world/b x/a\nworld/a . .\nx/a . .\n");
        assert!(
            matches!(error, TableError::ExternalToExternal { .. }),
            "{error}"
        );
    }

    #[test]
    fn empty_or_headless_tables_are_errors() {
        assert_eq!(parse_error("\n  \n"), TableError::Empty);
        assert_eq!(parse_error("-\nx/a\n"), TableError::NoColumns);
        assert_eq!(parse_error("- x/a\n"), TableError::NoRows);
    }

    #[test]
    fn plain_rendering_reproduces_the_case_layout() {
        assert_eq!(render_plain(&table(TABLE)), TABLE);
    }

    #[test]
    fn rendering_pads_columns_to_the_widest_name() {
        let table = table("- x/a world/ext1\nyy/long . X\n");
        assert_eq!(
            render_plain(&table),
            "-        x/a  world/ext1\nyy/long  .    X\n"
        );
    }

    #[test]
    fn comparison_marks_differing_cells_and_shows_the_observed_table() {
        let expected = table(TABLE);
        // Everything connects, and x/a to itself was not probed.
        let comparison = compare(&expected, &|row, column| {
            if row == "x/a" && column == "x/a" {
                None
            } else {
                Some(true)
            }
        });
        assert_eq!(
            comparison.mismatches(),
            [
                Mismatch {
                    from: "x/a".into(),
                    to: "x/b".into(),
                    expected: false
                },
                Mismatch {
                    from: "y/a".into(),
                    to: "x/a".into(),
                    expected: false
                },
                Mismatch {
                    from: "y/a".into(),
                    to: "x/b".into(),
                    expected: false
                },
            ]
        );
        let rendered = comparison.render();
        let lines: Vec<&str> = rendered.lines().collect();
        assert_eq!(
            lines[..4],
            [
                "-    x/a  x/b  y/a",
                "x/a  -    .*   .",
                "x/b  .    .    .",
                "y/a  .*   .*   ."
            ]
        );
        assert!(lines[4].starts_with("(observed: "), "{rendered}");
        assert_eq!(lines[5], "3 cells differ, 0 not probed");
        assert!(!comparison.is_match());
    }

    #[test]
    fn unprobed_cells_are_skipped_not_mismatched() {
        let expected = table(TABLE);
        let comparison = compare(&expected, &|row, column| {
            if row == "y/a" && column == "x/b" {
                None
            } else {
                expected.expected(row, column).or(Some(true))
            }
        });
        assert!(comparison.mismatches().is_empty());
        assert_eq!(comparison.skipped(), [("y/a".to_owned(), "x/b".to_owned())]);
        assert!(
            comparison.render().contains("y/a  X    ?    ."),
            "{}",
            comparison.render()
        );
        assert!(!comparison.is_match());
        assert_eq!(comparison.observed("x/a", "x/b"), Some(false));
    }

    #[test]
    fn a_matching_observation_is_a_match_and_shows_the_diagonal_as_observed() {
        let expected = table(TABLE);
        let comparison = compare(&expected, &|row, column| {
            expected.expected(row, column).or(Some(true))
        });
        assert!(comparison.is_match());
        assert!(
            comparison
                .render()
                .starts_with("-    x/a  x/b  y/a\nx/a  .    X    .\n")
        );
        assert!(!comparison.render().contains("not probed\n"));
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #[test]
            fn a_rendered_table_parses_back_to_itself(
                size in 1usize..6,
                bits in proptest::collection::vec(any::<bool>(), 36),
            ) {
                let names: Vec<String> =
                    (0..size).map(|i| format!("ns{}/pod-{i}", i % 2)).collect();
                let row = |r: usize| (0..size).map(|c| bits[r * 6 + c]).collect();
                let cells = (0..size).map(row).collect();
                let table = Table { columns: names.clone(), rows: names, cells };
                prop_assert_eq!(render_plain(&table).parse::<Table>(), Ok(table));
            }
        }
    }
}

//! Truth tables in the layout the upstream e2e netpol suite prints: a header of destinations
//! (its first token a placeholder), then one line per source with `.` (must connect) or `X`
//! (must fail) per destination. Cells on the diagonal (a pod to itself) are never compared.
//!
//! This file reads, checks and prints an expected table; holding what was observed against it
//! is in `compare.rs`.

mod compare;
#[cfg(test)]
mod tests;

use std::{collections::BTreeSet, fmt, str::FromStr};

pub use self::compare::{Comparison, Mismatch, compare};
use palisade::k8s::cluster::ObjectKey;

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

//! Reading, checking, printing and comparing truth tables.

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

use super::*;

fn col<'a>(name: &'a str, type_name: &'a str) -> Column<'a> {
    Column {
        name,
        type_name,
        not_null: true,
        has_default: false,
    }
}

fn go_table() -> Vec<Column<'static>> {
    alloc::vec![
        col("name", "text"),
        col("holder", "text"),
        col("version", "bigint"),
        col("timestamp", "timestamp with time zone"),
    ]
}

#[test]
fn the_go_flags_table_is_accepted() {
    assert_eq!(check_shape(&go_table(), true), Ok(Shape { term: false }));
}

#[test]
fn the_term_column_is_found_and_must_be_a_nullable_bigint() {
    let mut t = go_table();
    t.push(Column {
        name: TERM_COLUMN,
        type_name: "bigint",
        not_null: false,
        has_default: false,
    });
    assert_eq!(check_shape(&t, true), Ok(Shape { term: true }));
    t[4].type_name = "integer";
    assert!(matches!(
        check_shape(&t, true),
        Err(ShapeError::WrongType { column: "term", .. })
    ));
    t[4] = col(TERM_COLUMN, "bigint");
    assert!(matches!(
        check_shape(&t, true),
        Err(ShapeError::ExtraNotNull { .. })
    ));
}

#[test]
fn a_wrong_shape_names_the_column() {
    let mut t = go_table();
    t[3] = col("timestamp", "timestamp without time zone");
    assert_eq!(
        check_shape(&t, true),
        Err(ShapeError::WrongType {
            column: "timestamp",
            found: "timestamp without time zone".into(),
            expected: "timestamp with time zone"
        })
    );
    let mut t = go_table();
    t.remove(1);
    assert_eq!(
        check_shape(&t, true),
        Err(ShapeError::MissingColumn { column: "holder" })
    );
    let mut t = go_table();
    t[2] = col("version", "integer");
    assert!(matches!(
        check_shape(&t, true),
        Err(ShapeError::WrongType {
            column: "version",
            ..
        })
    ));
    let mut t = go_table();
    t.push(col("owner", "text"));
    assert_eq!(
        check_shape(&t, true),
        Err(ShapeError::ExtraNotNull {
            column: "owner".into()
        })
    );
    assert_eq!(
        check_shape(&go_table(), false),
        Err(ShapeError::NameNotUnique)
    );
}

#[test]
fn varchar_and_nullable_columns_are_accepted() {
    let mut t = go_table();
    t[1] = Column {
        name: "holder",
        type_name: "character varying(200)",
        not_null: false,
        has_default: false,
    };
    t.push(Column {
        name: "note",
        type_name: "text",
        not_null: true,
        has_default: true,
    });
    assert_eq!(check_shape(&t, true), Ok(Shape { term: false }));
}

#[test]
fn statements_use_the_quoted_table_everywhere() {
    let t = Table::qualified("ops", "Flags \"x\"").unwrap();
    let s = Statements::new(&t);
    for text in [
        &s.check,
        &s.check_without_term,
        &s.fence,
        &s.add_term,
        &s.release,
        &s.create_table,
        &s.status,
        &s.force_release,
        &s.revoke,
    ] {
        assert!(!text.contains('{'), "{text}");
    }
    assert!(s
        .check
        .contains(r#"INSERT INTO "ops"."Flags ""x""" AS flag"#));
    assert!(s.check.contains(r#""term" = CASE"#) && s.check.contains("$8"));
    assert!(!s.check_without_term.contains(r#""term""#) && s.check_without_term.contains("$11"));
    assert!(s.fence.contains(r#"AND "term" = $3::bigint"#));
    assert_eq!(s.listen, r#"LISTEN "Flags ""x""""#);
    assert_eq!(s.channel, "Flags \"x\"");
    assert_eq!(s.regclass, r#""ops"."Flags ""x""""#);
}

#[test]
fn the_literal_fence_is_one_pass_and_quotes_every_value() {
    let t = Table::qualified("o\"ps", "$1 {term}").unwrap();
    let sql = fence_literal(&t, "{table}", "a\\'b $2", 0, i64::MAX);
    assert!(sql.contains(r#"FROM "o""ps"."$1 {term}""#), "{sql}");
    assert!(sql.contains(r"name = E'{table}'::text"), "{sql}");
    assert!(sql.contains(r"holder = E'a\\\'b $2'::text"), "{sql}");
    assert!(sql.contains(r#""term" = 0::bigint"#), "{sql}");
    assert!(
        sql.contains("9223372036854775807::bigint * interval"),
        "{sql}"
    );
    assert!(!sql.ends_with(';'));
}

#[test]
fn bad_table_names_are_refused() {
    assert_eq!(Table::new(""), Err(TableError::Empty));
    assert!(matches!(Table::new("a\0"), Err(TableError::Nul(_))));
    assert!(matches!(
        Table::new(&"t".repeat(64)),
        Err(TableError::TooLong { len: 64, .. })
    ));
    assert!(Table::new(&"t".repeat(63)).is_ok());
    assert_eq!(Table::default().quoted(), "\"leadership_flags\"");
}

/// The batch is the single check's fragments with the per-flag parameters read from `req`:
/// none of those parameters is left, and no part is left unfilled.
#[test]
fn the_batch_reads_every_per_flag_parameter_from_its_arrays() {
    let s = Statements::new(&Table::default());
    for text in [&s.check_batch, &s.check_batch_without_term] {
        for param in [
            "$3::bigint",
            "$5::bigint",
            "$6::boolean",
            "$7::boolean",
            "$8::bigint",
        ] {
            let per_element = format!("{param}[]");
            assert_eq!(
                text.matches(param).count(),
                text.matches(&per_element).count(),
                "{param} outside the unnest"
            );
        }
        for part in [
            "{server}",
            "{wins}",
            "{continues}",
            "{clock}",
            "{set_term}",
            "{term",
        ] {
            assert!(!text.contains(part), "{part} left in the batch");
        }
    }
    assert!(s.check_batch.contains("\"term\" = CASE WHEN"));
    assert!(!s.check_batch_without_term.contains("\"term\""));
}

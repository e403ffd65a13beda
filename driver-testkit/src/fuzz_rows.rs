//! The body of the `row_decoding` fuzz target (the tokio driver's decoding of the check's row);
//! `fuzz/` wraps it in `fuzz_target!` and `driver-tokio/tests/fuzz_row_decoding.rs` replays the
//! committed corpus and random inputs through it. The core's fuzz bodies are in
//! `leadership_sim::fuzz`.

use arbitrary::{Arbitrary, Unstructured};
use leadership_core::audit::AuditedFlag;
use leadership_core::{Config, Input, Instant};
use leadership_tokio::internal::{CheckRow, CHECK_COLUMNS};
use tokio_postgres::types::Type;
/// One column as the server might send it: any type among those near ours, any bytes or NULL.
#[derive(Arbitrary, Debug)]
struct FuzzColumn {
    /// Use the column's proper type (most of the time) or another one.
    proper_type: bool,
    other_type: u8,
    raw: Option<Vec<u8>>,
}

const PROPER: [Type; 11] = [
    Type::BOOL,
    Type::BOOL,
    Type::TEXT,
    Type::INT8,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TEXT,
    Type::INT4,
    Type::TIMESTAMPTZ,
    Type::BOOL,
];
const OTHERS: [Type; 8] = [
    Type::INT4,
    Type::VARCHAR,
    Type::BYTEA,
    Type::TIMESTAMP,
    Type::FLOAT8,
    Type::NAME,
    Type::INT2,
    Type::UNKNOWN,
];

/// `row_decoding`: any types and bytes (NULLs, wrong widths, invalid UTF-8, infinite
/// timestamps) in the check's eleven columns decode to a row or to a typed error naming the column;
/// a decoded row, handed to a core as the reply to its check, breaks no promise.
pub fn row_decoding(data: &[u8]) {
    let Ok(columns) = <[FuzzColumn; 11]>::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let typed: Vec<(Type, Option<&[u8]>)> = columns
        .iter()
        .zip(PROPER)
        .map(|(c, proper)| {
            let ty = if c.proper_type {
                proper
            } else {
                OTHERS[usize::from(c.other_type) % OTHERS.len()].clone()
            };
            (ty, c.raw.as_deref())
        })
        .collect();
    let typed: &[(Type, Option<&[u8]>); 11] = typed.as_slice().try_into().expect("eleven columns");
    match CheckRow::from_columns(typed) {
        Ok(row) => {
            if let (Some(raw), Some(version)) = (typed[3].1, row.version) {
                assert_eq!(
                    raw,
                    version.to_be_bytes(),
                    "the version is the big-endian int8"
                );
            }
            let config = Config::builder("flag", "me").build().expect("valid");
            let mut flag = AuditedFlag::new(config, 1, Instant::ZERO);
            while flag
                .poll_command()
                .unwrap_or_else(|v| panic!("{v}"))
                .is_some()
            {}
            let reply = Input::Checked(row.as_input());
            // A won reply without a version is a contract error, not a violation.
            let _ = flag
                .handle_input(Instant::ZERO, reply)
                .unwrap_or_else(|v| panic!("{v}"));
            while flag
                .poll_command()
                .unwrap_or_else(|v| panic!("{v}"))
                .is_some()
            {}
        }
        Err(e) => {
            assert!(CHECK_COLUMNS.contains(&e.column), "{e}");
            assert!(!e.to_string().is_empty());
        }
    }
}

//! What the drivers' integration tests share and the server kit (`leadership-pgkit`) cannot
//! hold, because it needs the tokio driver.
//!
//! - [`observe`]: the terms of running flags as their drivers recorded them, and the verdicts on
//!   overlaps and token order judged from those instants.
//! - [`fuzz_rows`]: the body of the `row_decoding` fuzz target, shared by `fuzz/` and
//!   `driver-tokio/tests/fuzz_row_decoding.rs`.

pub mod fuzz_rows;
pub mod observe;

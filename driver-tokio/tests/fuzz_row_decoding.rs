//! The row-decoding fuzz target on stable Rust, in the ordinary test run: every committed corpus
//! file, then a few thousand random inputs, through the same function `cargo fuzz` runs. The
//! core's targets replay in `sim/tests/fuzz_replay.rs`.

use std::path::PathBuf;

use leadership_driver_testkit::fuzz_rows::row_decoding;
use proptest::prelude::*;

#[test]
fn every_committed_corpus_input_passes() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/row_decoding");
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the seed corpus {} is missing: {e}", dir.display()));
    let mut replayed = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        row_decoding(&std::fs::read(&path).unwrap());
        replayed += 1;
    }
    assert!(
        replayed >= 3,
        "only {replayed} corpus inputs in {}",
        dir.display()
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn row_decoding_holds_on_random_inputs(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        row_decoding(&data);
    }
}

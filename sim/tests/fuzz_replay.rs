//! The core's fuzz targets on stable Rust, in the ordinary test run: every committed corpus
//! file, then a few thousand random inputs per target, through the same functions `cargo fuzz`
//! runs. The row-decoding target, which needs the tokio driver, replays in
//! `driver-tokio/tests/fuzz_row_decoding.rs`.

use std::path::PathBuf;

use leadership_sim::fuzz;
use proptest::prelude::*;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 3] = [
    ("core_events", |data| {
        fuzz::core_events(data);
    }),
    ("config", fuzz::config),
    ("simulation", fuzz::simulation),
];

fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

#[test]
fn every_committed_corpus_input_passes() {
    for (name, target) in TARGETS {
        let dir = corpus(name);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("the seed corpus {} is missing: {e}", dir.display()));
        let mut replayed = 0;
        for entry in entries {
            let path = entry.unwrap().path();
            target(&std::fs::read(&path).unwrap());
            replayed += 1;
        }
        assert!(
            replayed >= 3,
            "{name}: only {replayed} corpus inputs in {}",
            dir.display()
        );
    }
}

#[test]
fn the_event_corpus_exercises_the_core() {
    let dir = corpus("core_events");
    let events: usize = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| fuzz::core_events(&std::fs::read(e.unwrap().path()).unwrap()))
        .sum();
    assert!(
        events >= 1000,
        "the corpus drives only {events} events through the core"
    );
}

#[test]
fn random_inputs_reach_the_event_loop() {
    // Not a property of the core: proof that the random cases below do exercise it.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut byte = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as u8
    };
    let reached = (0..1000)
        .filter(|_| {
            let data: Vec<u8> = (0..512).map(|_| byte()).collect();
            fuzz::core_events(&data) > 0
        })
        .count();
    assert!(
        reached >= 500,
        "only {reached} of 1000 random inputs reached the event loop"
    );
}

proptest! {
    // A simulation costs milliseconds; fewer cases, as many seeds as the others' inputs.
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn simulation_holds_on_random_inputs(data in proptest::collection::vec(any::<u8>(), 32..64)) {
        fuzz::simulation(&data);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn core_events_holds_on_random_inputs(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        fuzz::core_events(&data);
    }

    #[test]
    fn config_holds_on_random_inputs(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        fuzz::config(&data);
    }
}

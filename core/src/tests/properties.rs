//! Properties over arbitrary input sequences: any inputs, in any order, at any times, with any
//! row contents, from any valid configuration.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;

use proptest::prelude::*;

use crate::audit::{AuditedFlag, Violation};
use crate::{Checked, Config, DbTime, Failure, Input, Instant, Precheck, Row};

#[derive(Clone, Debug)]
enum Step {
    /// Local time passes (µs).
    Wait(u64),
    /// The driver fires the timer at `poll_timeout`.
    Wake,
    /// A check reply with arbitrary contents.
    Checked {
        won: bool,
        row: Option<(Holder, Option<i64>, Option<i64>)>,
        db_skew_ms: i64,
    },
    Failed(bool),
    Released(bool),
    Precheck(u8),
    Notified,
    Close,
    Resign(Option<u64>),
    WorkStopped,
    /// A balanced set wants the flag, or not.
    Want(bool),
}

#[derive(Clone, Debug)]
enum Holder {
    Me,
    Other,
    Null,
}

fn step() -> impl Strategy<Value = Step> {
    let version = prop_oneof![
        Just(None),
        any::<i64>().prop_map(Some),
        (0i64..6).prop_map(Some),
        Just(Some(i64::MAX)),
    ];
    let timestamp = prop_oneof![
        Just(None),
        (-5_000i64..5_000).prop_map(Some),
        Just(Some(i64::MAX)),
        Just(Some(i64::MIN)),
    ];
    let holder = prop_oneof![Just(Holder::Me), Just(Holder::Other), Just(Holder::Null)];
    prop_oneof![
        3 => (0u64..3_000_000).prop_map(Step::Wait),
        4 => Just(Step::Wake),
        6 => (any::<bool>(), proptest::option::weighted(0.9, (holder, version, timestamp)), -100i64..100)
            .prop_map(|(won, row, db_skew_ms)| Step::Checked { won, row, db_skew_ms }),
        2 => any::<bool>().prop_map(Step::Failed),
        1 => any::<bool>().prop_map(Step::Released),
        1 => any::<u8>().prop_map(Step::Precheck),
        1 => Just(Step::Notified),
        1 => Just(Step::Close),
        1 => proptest::option::of(0u64..3_000_000).prop_map(Step::Resign),
        1 => Just(Step::WorkStopped),
        1 => any::<bool>().prop_map(Step::Want),
    ]
}

fn config() -> impl Strategy<Value = Config> {
    (
        1u64..60_000,
        0u32..=1000,
        any::<bool>(),
        1u64..100,
        0u64..30,
    )
        .prop_filter_map(
            "valid configuration",
            |(interval, jitter, precheck, timeout_pct, margin_pct)| {
                let interval = Duration::from_millis(interval);
                Config::builder("flag", "me")
                    .interval(interval)
                    .timeout((interval * timeout_pct as u32 / 100).max(Duration::from_micros(1)))
                    .margin(interval * margin_pct as u32 / 100)
                    .jitter(f64::from(jitter) / 1000.0)
                    .precheck(precheck)
                    .build()
                    .ok()
            },
        )
}

/// Runs the steps through an [`AuditedFlag`], which checks every promise of the core after each
/// call; returns the log of everything the core emitted, for the determinism property.
fn run(config: Config, seed: u64, steps: &[Step]) -> Result<Vec<String>, TestCaseError> {
    let db_epoch = 1_700_000_000_000_000i64;
    let mut now = Instant::from_nanos(1_000_000_000);
    let mut flag = AuditedFlag::new(config, seed, now);
    let mut log = Vec::new();
    let fail = |v: Violation| TestCaseError::fail(format!("{v}"));
    for step in steps {
        while let Some(command) = flag.poll_command().map_err(fail)? {
            log.push(format!("{now:?} {command:?}"));
        }
        let db_now = DbTime::from_unix_micros(db_epoch + (now.as_nanos() / 1000) as i64);
        let input = match step {
            Step::Wait(us) => {
                now = now + Duration::from_micros(*us);
                continue;
            }
            Step::Want(wanted) => {
                flag.handle_input(now, Input::Wanted(*wanted))
                    .map_err(fail)?
                    .map_err(|e| TestCaseError::fail(format!("{e}")))?;
                continue;
            }
            Step::Wake => {
                if let Some(t) = flag.poll_timeout().map_err(fail)? {
                    now = t;
                    flag.handle_timeout(t).map_err(fail)?;
                }
                continue;
            }
            Step::Checked {
                won,
                row,
                db_skew_ms,
            } => {
                let reply_now =
                    DbTime::from_unix_micros(db_now.as_unix_micros() + db_skew_ms * 1000);
                let row = row.as_ref().map(|(holder, version, ts_ms)| Row {
                    holder: match holder {
                        Holder::Me => Some("me"),
                        Holder::Other => Some("other"),
                        Holder::Null => None,
                    },
                    version: *version,
                    timestamp: ts_ms.map(|ms| match ms {
                        i64::MAX => DbTime::INFINITY,
                        i64::MIN => DbTime::NEG_INFINITY,
                        ms => DbTime::from_unix_micros(reply_now.as_unix_micros() + ms * 1000),
                    }),
                });
                Input::Checked(Checked {
                    won: *won,
                    won_by: None,
                    server: None,
                    row,
                    now: reply_now,
                })
            }
            Step::Failed(true) => Input::Failed(Failure::Timeout),
            Step::Failed(false) => Input::Failed(Failure::Error),
            Step::Released(released) => Input::Released {
                released: *released,
            },
            Step::Precheck(p) => Input::Precheck(
                [Precheck::Pass, Precheck::Refuse, Precheck::Error][usize::from(*p % 3)],
            ),
            Step::Notified => Input::Notified,
            Step::Close => Input::Close,
            Step::Resign(hold_off_us) => Input::Resign {
                hold_off: hold_off_us.map(Duration::from_micros),
            },
            Step::WorkStopped => Input::WorkStopped,
        };
        if let Err(refused) = flag.handle_input(now, input).map_err(fail)? {
            log.push(format!("{now:?} refused: {refused}"));
        }
    }
    Ok(log)
}

/// A driver that answers what is pending, the way a database could: the same properties must
/// hold on such plausible runs too, which reach deeper states than random replies.
fn plausible(steps: Vec<Step>) -> Vec<Step> {
    steps
        .into_iter()
        .flat_map(|s| match s {
            Step::Checked { .. } | Step::Failed(_) => alloc::vec![Step::Wake, s],
            s => alloc::vec![s],
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// No panic, and every promise `AuditedFlag` checks: Raise/Renewed only on a won check;
    /// never leader at or past the deadline; poll_timeout stable and never in the past;
    /// refused inputs change nothing.
    #[test]
    fn the_core_keeps_its_promises_under_any_inputs(
        config in config(),
        seed in any::<u64>(),
        steps in proptest::collection::vec(step(), 0..120),
    ) {
        run(config, seed, &steps)?;
    }

    #[test]
    fn the_core_keeps_its_promises_when_replies_follow_wakeups(
        config in config(),
        seed in any::<u64>(),
        steps in proptest::collection::vec(step(), 0..120),
    ) {
        run(config, seed, &plausible(steps))?;
    }

    /// The same inputs and seed give the same outputs.
    #[test]
    fn the_same_inputs_and_seed_give_the_same_outputs(
        config in config(),
        seed in any::<u64>(),
        steps in proptest::collection::vec(step(), 0..80),
    ) {
        let first = run(config.clone(), seed, &steps)?;
        let second = run(config, seed, &steps)?;
        prop_assert_eq!(first, second);
    }
}

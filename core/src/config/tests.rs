use super::*;
use alloc::string::ToString;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn defaults_match_the_go_flag() {
    let c = Config::builder("n", "p").build().unwrap();
    assert_eq!(c.interval(), secs(30));
    assert_eq!(c.timeout(), secs(1));
    assert_eq!(c.jitter(), 0.2);
    assert_eq!(c.retry_interval(), secs(3));
    assert_eq!(c.renew_interval(), secs(15));
    assert_eq!(c.margin(), Duration::from_millis(1500));
    assert_eq!(c.interval_micros(), 30_000_000);
    assert_eq!(c.stop_ahead(), Duration::from_millis(7500));
}

#[test]
fn a_margin_below_the_clock_drift_floor_is_refused_naming_the_margin() {
    let b = || Config::builder("n", "p").interval(secs(30));
    let e = b().margin(Duration::ZERO).build().unwrap_err();
    assert_eq!(
        e,
        ConfigError::MarginBelowFloor {
            margin: Duration::ZERO,
            floor: Duration::from_millis(30),
            interval: secs(30),
        }
    );
    assert!(e.to_string().starts_with("margin 0ns is below"), "{e}");
    let e = b()
        .margin(Duration::from_micros(29_999))
        .build()
        .unwrap_err();
    assert!(matches!(e, ConfigError::MarginBelowFloor { .. }), "{e}");
    assert!(b().margin(Duration::from_millis(30)).build().is_ok());
    // The shortest lease still refuses 0.
    let e = Config::builder("n", "p")
        .interval(MIN_INTERVAL)
        .margin(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(matches!(e, ConfigError::MarginBelowFloor { .. }), "{e}");
}

#[test]
fn defaults_adapt_to_a_short_lease_instead_of_clashing_with_it() {
    let c = Config::builder("n", "p")
        .interval(Duration::from_millis(200))
        .build()
        .unwrap();
    assert_eq!(c.timeout(), Duration::from_millis(20));
    assert_eq!(c.margin(), Duration::from_millis(10));
    assert_eq!(c.retry_interval(), Duration::from_millis(20));
    // A timeout the user gave still clashes, and the error names both values.
    let e = Config::builder("n", "p")
        .interval(Duration::from_millis(200))
        .timeout(secs(1))
        .build()
        .unwrap_err();
    assert_eq!(
        e,
        ConfigError::TimeoutNotBelowInterval {
            timeout: secs(1),
            interval: Duration::from_millis(200)
        }
    );
}

#[test]
fn with_the_default_stop_ahead_one_failed_renew_never_puts_the_lease_at_risk() {
    // For every lease, a renew attempt that fails after its whole time, the longest retry
    // interval and a second whole attempt end before the at-risk instant; without a
    // precheck, the work gets time to stop at every lease length.
    for ms in [400, 1_000, 2_000, 5_000, 10_000, 30_000, 120_000] {
        for precheck in [false, true] {
            let c = Config::builder("n", "p")
                .interval(Duration::from_millis(ms))
                .precheck(precheck)
                .build()
                .unwrap();
            let at_risk = c.interval() - c.margin() - c.stop_ahead();
            let blip =
                c.renew_interval() + c.attempt() * 2 + c.retry_interval().mul_f64(1.0 + c.jitter());
            if c.stop_ahead() > Duration::ZERO {
                assert!(blip <= at_risk, "{ms} ms: {blip:?} > {at_risk:?}");
            }
            if !precheck {
                assert!(c.stop_ahead() > Duration::ZERO, "{ms} ms: no stop-ahead");
            }
            if !precheck {
                // The Go flag's schedule whenever the default timeout allows it.
                assert_eq!(c.renew_interval(), Duration::from_millis(ms / 2), "{ms} ms");
            }
            assert!(c.renew_interval() + c.attempt() <= at_risk);
        }
    }
}

#[test]
fn an_interval_too_short_to_run_a_statement_is_refused_naming_the_interval() {
    // 10 ms implies a 1 ms timeout: the table could not even be created.
    let e = Config::builder("n", "p")
        .interval(Duration::from_millis(10))
        .build()
        .unwrap_err();
    assert_eq!(
        e,
        ConfigError::IntervalTooShort {
            interval: Duration::from_millis(10),
            timeout: Duration::from_millis(1),
            floor: MIN_TIMEOUT,
            min_interval: MIN_DEFAULT_INTERVAL,
        }
    );
    let text = e.to_string();
    assert!(
        text.starts_with("interval 10ms is too short") && text.contains("100ms"),
        "{text}"
    );
    // The floor exactly: 100 ms with its default timeout, or a shorter lease with a timeout
    // given at the floor.
    assert_eq!(MIN_DEFAULT_INTERVAL, MIN_TIMEOUT * 10);
    let c = Config::builder("n", "p")
        .interval(MIN_DEFAULT_INTERVAL)
        .build()
        .unwrap();
    assert_eq!(c.timeout(), MIN_TIMEOUT);
    assert!(Config::builder("n", "p")
        .interval(Duration::from_millis(99))
        .build()
        .is_err());
    assert!(Config::builder("n", "p")
        .interval(Duration::from_millis(50))
        .timeout(MIN_TIMEOUT)
        .build()
        .is_ok());
    // A timeout given below the floor is named as the timeout.
    assert_eq!(
        Config::builder("n", "p")
            .interval(secs(2))
            .timeout(Duration::from_millis(5))
            .build(),
        Err(ConfigError::TimeoutBelowFloor {
            timeout: Duration::from_millis(5),
            floor: MIN_TIMEOUT
        })
    );
}

#[test]
fn a_long_stop_ahead_renews_earlier_and_one_that_leaves_no_time_is_refused() {
    let c = Config::builder("n", "p")
        .interval(secs(10))
        .stop_ahead(secs(6))
        .build()
        .unwrap();
    // 10 s - 0.5 s margin - 6 s - 1 s timeout
    assert_eq!(c.renew_interval(), Duration::from_millis(2500));
    let e = Config::builder("n", "p")
        .interval(secs(10))
        .stop_ahead(secs(9))
        .build()
        .unwrap_err();
    assert_eq!(
        e,
        ConfigError::StopAheadTooLong {
            stop_ahead: secs(9),
            interval: secs(10),
            margin: Duration::from_millis(500),
            attempt: secs(1)
        }
    );
    let text = e.to_string();
    assert!(
        text.contains("stop-ahead 9s") && text.contains("interval 10s"),
        "{text}"
    );
}

#[test]
fn a_precheck_is_budgeted_in_the_schedule() {
    // The case: 2 s lease, 500 ms timeout, a precheck.
    let c = Config::builder("n", "p")
        .interval(secs(2))
        .timeout(Duration::from_millis(500))
        .precheck(true)
        .build()
        .unwrap();
    assert_eq!(c.attempt(), secs(1));
    assert!(c.renew_interval() + c.attempt() <= c.interval() - c.margin() - c.stop_ahead());
    let e = Config::builder("n", "p")
        .interval(secs(2))
        .timeout(Duration::from_millis(950))
        .precheck(true)
        .build()
        .unwrap_err();
    assert!(matches!(e, ConfigError::PrecheckCannotFinish { .. }), "{e}");
}

#[test]
fn renew_interval_shrinks_so_a_slow_renew_lands_before_the_deadline() {
    // The Go peer's benchmark settings: 2 s lease, 1 s timeout.
    let c = Config::builder("n", "p")
        .interval(secs(2))
        .timeout(secs(1))
        .build()
        .unwrap();
    assert_eq!(c.margin(), Duration::from_millis(100));
    assert_eq!(c.renew_interval(), Duration::from_millis(900));
    assert!(c.renew_interval() + c.timeout() <= c.interval() - c.margin());
}

#[test]
fn names_are_checked() {
    let err = |n: &str, p: &str| Config::builder(n, p).build().unwrap_err();
    assert_eq!(err("", "p"), ConfigError::Empty { field: "name" });
    assert_eq!(err("n", ""), ConfigError::Empty { field: "process" });
    assert_eq!(
        err("a\0b", "p"),
        ConfigError::Nul {
            field: "name",
            at: 1
        }
    );
    let long = "x".repeat(MAX_NAME_BYTES + 1);
    assert_eq!(
        err("n", &long),
        ConfigError::TooLong {
            field: "process",
            len: MAX_NAME_BYTES + 1,
            max: MAX_NAME_BYTES
        }
    );
    assert!(Config::builder("x".repeat(MAX_NAME_BYTES), "p")
        .build()
        .is_ok());
}

#[test]
fn durations_and_jitter_are_checked() {
    let b = || Config::builder("n", "p");
    assert!(matches!(
        b().interval(Duration::ZERO).build(),
        Err(ConfigError::OutOfRange {
            field: "interval",
            ..
        })
    ));
    assert!(matches!(
        b().timeout(Duration::ZERO).build(),
        Err(ConfigError::OutOfRange {
            field: "timeout",
            ..
        })
    ));
    assert!(matches!(
        b().interval(Duration::MAX).build(),
        Err(ConfigError::OutOfRange {
            field: "interval",
            ..
        })
    ));
    for j in [-0.1, 1.1, f64::NAN, f64::INFINITY] {
        assert!(
            matches!(b().jitter(j).build(), Err(ConfigError::Jitter(_))),
            "{j}"
        );
    }
    assert!(b().jitter(0.0).build().is_ok());
    assert!(b().jitter(1.0).build().is_ok());
}

#[test]
fn clashing_values_are_named() {
    let b = || Config::builder("n", "p").interval(secs(10));
    assert_eq!(
        b().timeout(secs(10)).build(),
        Err(ConfigError::TimeoutNotBelowInterval {
            timeout: secs(10),
            interval: secs(10)
        })
    );
    assert_eq!(
        b().margin(secs(10)).build(),
        Err(ConfigError::MarginNotBelowInterval {
            margin: secs(10),
            interval: secs(10)
        })
    );
    let e = b().timeout(secs(6)).margin(secs(4)).build().unwrap_err();
    assert_eq!(
        e,
        ConfigError::RenewCannotFinish {
            interval: secs(10),
            margin: secs(4),
            timeout: secs(6)
        }
    );
    let text = e.to_string();
    assert!(
        text.contains("interval 10s") && text.contains("timeout 6s"),
        "{text}"
    );
    assert_eq!(
        b().retry_interval(secs(10)).build(),
        Err(ConfigError::RetryNotBelowInterval {
            retry: secs(10),
            interval: secs(10)
        })
    );
}

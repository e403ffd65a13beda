//! The core's fuzz targets' bodies. `fuzz/` wraps each in `fuzz_target!`; `sim/tests/fuzz_replay.rs`
//! runs the same functions over the committed corpus and random inputs, so plain `cargo test`
//! exercises them on stable Rust. Each panics on a broken promise and returns quietly on any
//! input that is merely invalid. The row-decoding target, which needs the tokio driver, is in
//! `leadership_driver_testkit::fuzz_rows`.

use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use leadership_core::audit::AuditedFlag;
use leadership_core::{
    Checked, Config, ConfigError, DbTime, Failure, Input, Instant, Precheck, Row, MAX_NAME_BYTES,
};

/// Builder inputs, as a user might type them.
#[derive(Arbitrary, Debug)]
struct ConfigInput {
    name: String,
    process: String,
    interval_ns: u64,
    timeout_ns: u64,
    jitter: f64,
    margin_ns: Option<u64>,
    retry_ns: Option<u64>,
    precheck: bool,
    stop_ahead_ns: Option<u64>,
}

impl ConfigInput {
    fn build(&self) -> Result<Config, ConfigError> {
        let mut b = Config::builder(self.name.clone(), self.process.clone())
            .interval(Duration::from_nanos(self.interval_ns))
            .timeout(Duration::from_nanos(self.timeout_ns))
            .jitter(self.jitter)
            .precheck(self.precheck);
        if let Some(m) = self.margin_ns {
            b = b.margin(Duration::from_nanos(m));
        }
        if let Some(r) = self.retry_ns {
            b = b.retry_interval(Duration::from_nanos(r));
        }
        if let Some(s) = self.stop_ahead_ns {
            b = b.stop_ahead(Duration::from_nanos(s));
        }
        b.build()
    }
}

/// `config`: any builder input gives a configuration that keeps every documented relation, or
/// a typed error; never a panic.
pub fn config(data: &[u8]) {
    let Ok(input) = ConfigInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    match input.build() {
        Ok(c) => {
            for name in [c.name(), c.process()] {
                assert!(!name.is_empty() && name.len() <= MAX_NAME_BYTES && !name.contains('\0'));
            }
            assert!(c.timeout() < c.interval(), "{c:?}");
            assert!(c.margin() < c.interval(), "{c:?}");
            assert!(c.retry_interval() < c.interval(), "{c:?}");
            assert!(c.renew_interval() > Duration::ZERO, "{c:?}");
            assert!(
                c.renew_interval() + c.timeout() <= c.interval() - c.margin(),
                "a renew could land after the deadline: {c:?}"
            );
            assert!(
                c.renew_interval() + c.attempt() <= c.interval() - c.margin() - c.stop_ahead(),
                "a renew (with its precheck) could land after the at-risk instant: {c:?}"
            );
            assert!((0.0..=1.0).contains(&c.jitter()), "{c:?}");
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// A configuration that is valid for most inputs, so the event fuzzer spends its time on
/// events; `config` covers arbitrary builder inputs.
#[derive(Arbitrary, Debug)]
struct PlausibleConfig {
    interval_ms: u16,
    timeout_pct: u8,
    margin_pct: u8,
    jitter_pct: u8,
    retry_pct: u8,
    precheck: bool,
}

impl PlausibleConfig {
    fn build(&self, process: &str) -> Result<Config, ConfigError> {
        let interval = Duration::from_millis(1 + u64::from(self.interval_ms));
        let part = |pct: u8| interval * u32::from(pct % 100) / 100;
        Config::builder("flag", process)
            .interval(interval)
            // Kept small enough that a precheck and a check fit in most leases.
            .timeout(part(self.timeout_pct % 40).max(Duration::from_micros(1)))
            .margin(part(self.margin_pct % 30))
            .jitter(f64::from(self.jitter_pct % 101) / 100.0)
            .retry_interval(part(self.retry_pct).max(Duration::from_micros(1)))
            .precheck(self.precheck)
            .build()
    }
}

/// One thing that happens to a core.
#[derive(Arbitrary, Debug)]
enum Event {
    /// Local time moves forward by any amount (years included).
    Wait(u64),
    /// Local time moves backwards (a broken driver): the core must clamp it.
    Back(u64),
    /// The timer fires at `poll_timeout`.
    Wake,
    Checked {
        won: bool,
        row: Option<FuzzRow>,
        /// Any database time, infinities included.
        now: i64,
    },
    Failed(bool),
    Released(bool),
    Precheck(u8),
    Notified,
    Close,
    WorkStopped,
}

#[derive(Arbitrary, Debug)]
struct FuzzRow {
    /// Any bytes, any length; decoded lossily as a driver would receive text.
    holder: Option<Vec<u8>>,
    holder_is_self: bool,
    version: Option<i64>,
    timestamp: Option<i64>,
}

/// `core_events`: any sequence of inputs, at any times, with any rows, on a core built from a
/// valid configuration: every promise [`AuditedFlag`] checks holds, contract breaches come back
/// as typed errors, nothing panics. Returns how many events were handled.
pub fn core_events(data: &[u8]) -> usize {
    let mut u = Unstructured::new(data);
    let (Ok(input), Ok(process), Ok(seed), Ok(start)) = (
        PlausibleConfig::arbitrary(&mut u),
        String::arbitrary(&mut u),
        u64::arbitrary(&mut u),
        u64::arbitrary(&mut u),
    ) else {
        return 0;
    };
    let process = if process.is_empty() {
        "me".to_string()
    } else {
        process
    };
    let Ok(config) = input.build(&process) else {
        return 0;
    };
    let mut now = Instant::from_nanos(start);
    let mut flag = AuditedFlag::new(config, seed, now);
    let mut events = 0;
    while let Ok(event) = Event::arbitrary(&mut u) {
        events += 1;
        if events > 10_000 {
            break;
        }
        while let Some(_command) = flag.poll_command().unwrap_or_else(|v| panic!("{v}")) {}
        let holder_text;
        let input = match event {
            Event::Wait(d) => {
                now = Instant::from_nanos(now.as_nanos().saturating_add(d));
                continue;
            }
            Event::Back(d) => {
                now = Instant::from_nanos(now.as_nanos().saturating_sub(d));
                continue;
            }
            Event::Wake => {
                let timeout = flag.poll_timeout().unwrap_or_else(|v| panic!("{v}"));
                if let Some(t) = timeout {
                    now = now.max(t);
                }
                flag.handle_timeout(now).unwrap_or_else(|v| panic!("{v}"));
                continue;
            }
            Event::Checked {
                won,
                row,
                now: db_now,
            } => {
                holder_text = row.as_ref().and_then(|r| {
                    if r.holder_is_self {
                        Some(process.clone())
                    } else {
                        r.holder
                            .as_ref()
                            .map(|h| String::from_utf8_lossy(h).into_owned())
                    }
                });
                Input::Checked(Checked {
                    won,
                    won_by: None,
                    server: None,
                    row: row.map(|r| Row {
                        holder: holder_text.as_deref(),
                        version: r.version,
                        timestamp: r.timestamp.map(DbTime::from_unix_micros),
                    }),
                    now: DbTime::from_unix_micros(db_now),
                })
            }
            Event::Failed(timeout) => Input::Failed(if timeout {
                Failure::Timeout
            } else {
                Failure::Error
            }),
            Event::Released(released) => Input::Released { released },
            Event::Precheck(p) => Input::Precheck(
                [Precheck::Pass, Precheck::Refuse, Precheck::Error][usize::from(p % 3)],
            ),
            Event::Notified => Input::Notified,
            Event::Close => Input::Close,
            Event::WorkStopped => Input::WorkStopped,
        };
        // A contract error (Ok(Err(_))) is a typed answer, not a failure.
        let _ = flag
            .handle_input(now, input)
            .unwrap_or_else(|v| panic!("{v}"));
    }
    events
}

/// A fleet and a fault mix, as the simulator's proptest draws them.
#[derive(Arbitrary, Debug)]
struct FuzzFleet {
    seed: u64,
    processes: u8,
    go_peers: u8,
    fault_mask: u32,
    interval: u8,
    timeout_pct: u8,
    jitter_pct: u8,
    margin_pct: Option<u8>,
    intensity: u8,
}

/// `simulation`: any seed, fleet and fault mix within the safety conditions keeps every
/// invariant of the simulator (two leaders, fencing order, liveness, Go leases) and every
/// promise of each (audited) core.
pub fn simulation(data: &[u8]) {
    use crate::sim::{self, Faults, SimConfig, FAULT_NAMES};
    let Ok(f) = FuzzFleet::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let interval_ms = [500u64, 1_000, 2_000, 5_000, 30_000][usize::from(f.interval) % 5];
    let names: Vec<&str> = FAULT_NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| f.fault_mask & (1 << i) != 0)
        .map(|(_, n)| *n)
        .collect();
    let config = SimConfig {
        seed: f.seed,
        processes: 1 + usize::from(f.processes % 7),
        go_peers: usize::from(f.go_peers % 3),
        duration: Duration::from_secs(120),
        interval: Duration::from_millis(interval_ms),
        timeout: Duration::from_millis(interval_ms * (1 + u64::from(f.timeout_pct % 45)) / 100),
        jitter: f64::from(f.jitter_pct % 101) / 100.0,
        margin: f
            .margin_pct
            .map(|p| Duration::from_millis(interval_ms * (5 + u64::from(p % 10)) / 100)),
        faults: Faults::parse(&names.join(",")).expect("known fault names"),
        intensity: 1 + u32::from(f.intensity % 10),
        audit: true,
        ..SimConfig::default()
    };
    if config.validate().is_err() {
        return;
    }
    let report = sim::run(&config);
    if let Some(failure) = &report.failure {
        panic!("{failure}\nsettings: {config:?}");
    }
}

//! Cost of one input to the core: nanoseconds, and allocations counted by a wrapping global
//! allocator (the core promises none per input).
//!
//! `cargo bench -p leadership-core --bench inputs`

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant as Clock};

use leadership_core::{Checked, Command, Config, DbTime, Flag, Input, Instant, Row};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const ROUNDS: u64 = 2_000_000;

/// One check round trip of a leader: wake, Check, won reply, Renewed. Two inputs per round.
fn leader(rounds: u64) -> (u64, Duration, u64) {
    let config = Config::builder("flag", "me")
        .interval(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut now = Instant::from_nanos(1);
    let mut flag = Flag::new(config, 1, now);
    let mut version = -1i64;
    let db = DbTime::from_unix_micros(1_700_000_000_000_000);
    let mut inputs = 0;
    let allocations = ALLOCATIONS.load(Ordering::Relaxed);
    let start = Clock::now();
    for _ in 0..rounds {
        while let Some(command) = flag.poll_command() {
            if let Command::Check { .. } = command {
                version += 1;
                let row = Row {
                    holder: Some("me"),
                    version: Some(version),
                    timestamp: Some(db),
                };
                let reply = Input::Checked(Checked {
                    won: true,
                    won_by: None,
                    server: None,
                    row: Some(row),
                    now: db,
                });
                flag.handle_input(now, black_box(reply)).unwrap();
                inputs += 1;
            }
        }
        now = flag.poll_timeout().unwrap();
        flag.handle_timeout(now);
        inputs += 1;
    }
    let elapsed = start.elapsed();
    (
        inputs,
        elapsed,
        ALLOCATIONS.load(Ordering::Relaxed) - allocations,
    )
}

/// One check of a follower facing a live lease: wake, Check, not won. Two inputs per round.
fn follower(rounds: u64) -> (u64, Duration, u64) {
    let config = Config::builder("flag", "me")
        .interval(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut now = Instant::from_nanos(1);
    let mut flag = Flag::new(config, 1, now);
    let mut db = DbTime::from_unix_micros(1_700_000_000_000_000);
    let mut inputs = 0;
    let allocations = ALLOCATIONS.load(Ordering::Relaxed);
    let start = Clock::now();
    for _ in 0..rounds {
        while let Some(command) = flag.poll_command() {
            if let Command::Check { .. } = command {
                let row = Row {
                    holder: Some("other"),
                    version: Some(7),
                    timestamp: Some(db),
                };
                let reply = Input::Checked(Checked {
                    won: false,
                    won_by: None,
                    server: None,
                    row: Some(row),
                    now: db,
                });
                flag.handle_input(now, black_box(reply)).unwrap();
                inputs += 1;
            }
        }
        let next = flag.poll_timeout().unwrap();
        db = db.saturating_add(next - now);
        now = next;
        flag.handle_timeout(now);
        inputs += 1;
    }
    let elapsed = start.elapsed();
    (
        inputs,
        elapsed,
        ALLOCATIONS.load(Ordering::Relaxed) - allocations,
    )
}

fn main() {
    println!(
        "{:<10} {:>12} {:>12} {:>14}",
        "role", "inputs", "ns/input", "allocations"
    );
    for (role, run) in [("leader", leader as fn(u64) -> _), ("follower", follower)] {
        run(ROUNDS / 10); // warm up
        let (inputs, elapsed, allocations) = run(ROUNDS);
        let ns = elapsed.as_nanos() as f64 / inputs as f64;
        println!("{role:<10} {inputs:>12} {ns:>12.1} {allocations:>14}");
        assert_eq!(allocations, 0, "the core allocated during the {role} loop");
    }
}

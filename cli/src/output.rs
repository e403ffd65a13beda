//! Standard output for JSON lines, written by a thread of its own: a reader that stops reading
//! (a blocked pipe) stalls that thread only, never the runtime that renews the lease.
//!
//! The lines wait in a queue of at most [`QUEUE`]: each line is a whole state (who leads, the
//! token, the deadline), so when a stalled reader lets the queue fill, the oldest waiting line
//! is dropped for the newest, and the next line written says how many were dropped before it
//! (`"dropped":N`). A reader that comes back reads the latest state at once, and knows it
//! missed changes; the tool's memory stays bounded however long the reader stalls.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The most lines waiting to be written (beyond the one being written and what the pipe itself
/// holds). A reader this many changes behind has stalled; older states are only history.
pub const QUEUE: usize = 16;

#[derive(Default)]
struct Queue {
    lines: VecDeque<serde_json::Value>,
    /// Lines dropped since the last one written.
    dropped: u64,
    /// The writer holds a line it has not finished writing.
    writing: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when a line is queued and when one has been written.
    changed: Condvar,
}

/// The writer thread's end.
pub struct Output {
    shared: Arc<Shared>,
}

impl Output {
    /// Writes to standard output.
    pub fn start() -> Output {
        Output::to(std::io::stdout())
    }

    /// Writes to `out`, from a thread of its own.
    pub fn to(mut out: impl Write + Send + 'static) -> Output {
        let shared = Arc::new(Shared::default());
        let writer = Arc::clone(&shared);
        std::thread::spawn(move || loop {
            let mut line = {
                let mut queue = writer.queue.lock().unwrap();
                loop {
                    if let Some(line) = queue.lines.pop_front() {
                        break line;
                    }
                    if Arc::strong_count(&writer) == 1 {
                        return; // the tool's end is gone, and everything is written
                    }
                    queue = writer
                        .changed
                        .wait_timeout(queue, Duration::from_millis(100))
                        .unwrap()
                        .0;
                }
            };
            let dropped = {
                let mut queue = writer.queue.lock().unwrap();
                queue.writing = true;
                std::mem::take(&mut queue.dropped)
            };
            if dropped > 0 {
                line["dropped"] = dropped.into();
            }
            // One write per line, flushed: a reader may act on each line as it comes.
            let text = format!("{line}\n");
            let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
            writer.queue.lock().unwrap().writing = false;
            writer.changed.notify_all();
        });
        Output { shared }
    }

    /// Queues one line; if [`QUEUE`] lines are waiting already, the oldest of them is dropped
    /// (and counted on the next line written).
    pub fn line(&self, line: serde_json::Value) {
        let mut queue = self.shared.queue.lock().unwrap();
        if queue.lines.len() >= QUEUE {
            queue.lines.pop_front();
            queue.dropped += 1;
        }
        queue.lines.push_back(line);
        drop(queue);
        self.shared.changed.notify_all();
    }

    /// Waits up to `bound` for the lines queued so far to be written.
    pub fn flush_within(&self, bound: Duration) {
        let end = Instant::now() + bound;
        let mut queue = self.shared.queue.lock().unwrap();
        while !queue.lines.is_empty() || queue.writing {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            queue = self.shared.changed.wait_timeout(queue, left).unwrap().0;
        }
    }
}

/// Nanoseconds since the Unix epoch, now.
pub fn unix_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The wall-clock instant of a monotonic one: what an observer can compare with its own clock
/// to tell when this process stops believing it leads, even while the process is frozen.
pub fn unix_ns_at(at: Instant) -> i64 {
    let now = Instant::now();
    let offset = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    if at >= now {
        unix_ns().saturating_add(offset(at - now))
    } else {
        unix_ns().saturating_sub(offset(now - at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::mpsc;

    /// A pipe whose reader stalls until told to read: each write (one per line) blocks until
    /// `release`.
    struct Stalled {
        gate: mpsc::Receiver<()>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.gate.recv();
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(bytes: &[u8]) -> Vec<serde_json::Value> {
        std::str::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn a_stalled_reader_keeps_the_latest_states_and_is_told_how_many_were_dropped() {
        let (release, gate) = mpsc::channel();
        let written = Arc::new(Mutex::new(Vec::new()));
        let out = Output::to(Stalled {
            gate,
            written: Arc::clone(&written),
        });
        out.line(json!({"n": 0}));
        // The writer takes line 0 and blocks in its write: everything after waits in the queue.
        let start = Instant::now();
        while !out.shared.queue.lock().unwrap().writing {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the writer never started"
            );
            std::thread::yield_now();
        }
        for n in 1..=1000 {
            out.line(json!({"n": n}));
        }
        assert_eq!(
            out.shared.queue.lock().unwrap().lines.len(),
            QUEUE,
            "bounded"
        );
        // The reader comes back.
        for _ in 0..=QUEUE {
            release.send(()).unwrap();
        }
        out.flush_within(Duration::from_secs(5));
        let seen = lines(&written.lock().unwrap());
        let n: Vec<u64> = seen.iter().map(|l| l["n"].as_u64().unwrap()).collect();
        let newest: Vec<u64> = (1000 - QUEUE as u64 + 1..=1000).collect();
        assert_eq!(n[0], 0);
        assert_eq!(n[1..], newest[..], "the newest {QUEUE} states, in order");
        assert_eq!(seen[0].get("dropped"), None);
        assert_eq!(
            seen[1]["dropped"],
            1000 - QUEUE as u64,
            "said on the next line"
        );
        assert!(seen[2..].iter().all(|l| l.get("dropped").is_none()));
    }

    #[test]
    fn watch_s_help_states_the_bound() {
        use clap::CommandFactory;
        let help = crate::args::Cli::command()
            .find_subcommand("watch")
            .and_then(|w| w.get_long_about().map(ToString::to_string))
            .unwrap();
        assert!(help.contains(&format!("At most {QUEUE} lines")), "{help}");
    }

    #[test]
    fn a_reader_that_keeps_up_loses_nothing() {
        let (release, gate) = mpsc::channel();
        let written = Arc::new(Mutex::new(Vec::new()));
        let out = Output::to(Stalled {
            gate,
            written: Arc::clone(&written),
        });
        for n in 0..100 {
            release.send(()).unwrap();
            out.line(json!({"n": n}));
            out.flush_within(Duration::from_secs(5));
        }
        let seen = lines(&written.lock().unwrap());
        assert_eq!(seen.len(), 100);
        assert!(seen.iter().all(|l| l.get("dropped").is_none()));
    }
}

//! Standard output for JSON lines, written by a thread of its own: a reader that stops reading
//! (a blocked pipe) stalls that thread only, never the runtime that renews the lease.

use std::io::Write;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

enum Message {
    Line(String),
    /// Answer once everything before has been written.
    Flush(mpsc::SyncSender<()>),
}

/// The writer thread's end.
pub struct Output {
    tx: mpsc::Sender<Message>,
}

impl Output {
    pub fn start() -> Output {
        let (tx, rx) = mpsc::channel::<Message>();
        std::thread::spawn(move || {
            let mut out = std::io::stdout();
            for message in rx {
                match message {
                    Message::Line(line) => {
                        // One write per line, flushed: a reader may act on each line as it comes.
                        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
                    }
                    Message::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        Output { tx }
    }

    /// Queues one line.
    pub fn line(&self, line: serde_json::Value) {
        let _ = self.tx.send(Message::Line(line.to_string()));
    }

    /// Waits up to `bound` for the lines queued so far to be written.
    pub fn flush_within(&self, bound: Duration) {
        let (done, written) = mpsc::sync_channel(1);
        if self.tx.send(Message::Flush(done)).is_ok() {
            let _ = written.recv_timeout(bound);
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

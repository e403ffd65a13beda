//! Command-line arguments and clock of the peer examples (`tokio_peer`, `blocking_peer`): the
//! flags of the Go peer `seedpeer`, so one harness drives all three. Included by both examples
//! with `#[path]`; this directory has no `main.rs`, so cargo does not build it on its own.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub struct Args {
    pub url: String,
    pub name: String,
    pub process: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub jitter: f64,
    pub poll: Duration,
    pub duration: Duration,
    pub flags: usize,
    pub set: bool,
    pub batch: bool,
}

fn duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let v: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ns" => v / 1e9,
        "us" | "µs" => v / 1e6,
        "ms" => v / 1e3,
        "s" | "" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?}")),
    };
    Ok(Duration::from_secs_f64(secs))
}

pub fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        url: String::new(),
        name: "seed".into(),
        process: format!("peer-{}", std::process::id()),
        interval: Duration::from_secs(2),
        timeout: Duration::from_secs(1),
        jitter: 0.2,
        poll: Duration::from_millis(10),
        duration: Duration::ZERO,
        flags: 1,
        set: false,
        batch: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let flag = arg.trim_start_matches('-');
        let (key, inline) = match flag.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (flag.to_string(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or(format!("{arg} needs a value"))
        };
        match key.as_str() {
            "url" => a.url = value()?,
            "name" => a.name = value()?,
            "process" => a.process = value()?,
            "interval" => a.interval = duration(&value()?)?,
            "timeout" => a.timeout = duration(&value()?)?,
            "jitter" => a.jitter = value()?.parse().map_err(|e| format!("jitter: {e}"))?,
            "poll" => a.poll = duration(&value()?)?,
            "duration" => a.duration = duration(&value()?)?,
            "flags" => a.flags = value()?.parse().map_err(|e| format!("flags: {e}"))?,
            "set" => a.set = true,
            "no-batch" => a.batch = false,
            _ => return Err(format!("unknown flag {arg}")),
        }
    }
    if a.url.is_empty() {
        return Err("--url is required".into());
    }
    Ok(a)
}

pub fn unix_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

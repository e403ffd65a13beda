//! One process competing for a flag, with the command line and output of the Go flag's
//! `seedpeer` (`../shared/peers/go-seed`), so one harness measures both; this is the blocking driver's (`bench` in
//! `leadership-bench`).
//!
//! ```sh
//! cargo run --release -p leadership-blocking --example blocking_peer -- \
//!     --url "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable" --name seed --process p1
//! ```
//!
//! Flags (`-flag` or `--flag`, value separate or after `=`): `url` (required), `name` (default
//! `seed`), `process` (default `peer-<pid>`), `interval` (`2s`), `timeout` (`1s`), `jitter`
//! (`0.2`), `poll` (`10ms`), `duration` (`0` = until a signal), `flags` (hold this many flags,
//! `<name>`, `<name>-1`, …, each its own connection; only the first is reported; for memory
//! figures), `set` (hold them in one `FlagSet`: one connection and one thread), `no-batch` (the
//! set sends each flag's single check instead of batches).
//!
//! Output: one JSON line once started (`raised:false`), then one on every change of
//! `is_raised()` seen by polling every `poll`, and one on every renewal while raised; raised
//! lines carry `deadline_unix_ns`, where the belief ends unless renewed (wall clock):
//!
//! ```json
//! {"t_unix_ns":1795504567979718071,"process":"p1","raised":false}
//! {"t_unix_ns":1795504567990592990,"process":"p1","raised":true,"deadline_unix_ns":1795504569890592990}
//! ```
//!
//! SIGTERM or SIGINT: `close()` (hands the flag over), exit 0. A failed start: exit 1.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use leadership_blocking::{Flag, FlagSet};

#[path = "../../driver-tokio/examples/common/peer_args.rs"]
mod peer_args;
use peer_args::{parse_args, unix_ns};
use tokio::signal::unix::{signal, SignalKind};

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("peer: {e}");
        std::process::exit(2)
    });
    let set = args.set.then(|| {
        FlagSet::builder(args.process.as_str())
            .connect_str(&args.url)
            .interval(args.interval)
            .timeout(args.timeout)
            .jitter(args.jitter)
            .batch(args.batch)
            .start(postgres::NoTls)
            .unwrap_or_else(|e| {
                eprintln!("peer {}: start failed: {e}", args.process);
                std::process::exit(1);
            })
    });
    let mut flags = Vec::with_capacity(args.flags);
    for i in 0..args.flags {
        let name = match i {
            0 => args.name.clone(),
            _ => format!("{}-{i}", args.name),
        };
        let started = match &set {
            Some(set) => set.add(name),
            None => Flag::builder(name, args.process.as_str())
                .connect_str(&args.url)
                .interval(args.interval)
                .timeout(args.timeout)
                .jitter(args.jitter)
                .start(postgres::NoTls),
        };
        match started {
            Ok(flag) => flags.push(flag),
            Err(e) => {
                eprintln!("peer {}: start failed: {e}", args.process);
                std::process::exit(1);
            }
        }
    }
    // SIGTERM/SIGINT set `stop`, from a one-thread tokio runtime (a dev-dependency only).
    let stop = Arc::new(AtomicBool::new(false));
    let setter = Arc::clone(&stop);
    thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("signal runtime");
        rt.block_on(async {
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        });
        setter.store(true, Ordering::SeqCst);
    });
    let end = (!args.duration.is_zero()).then(|| Instant::now() + args.duration);
    let mut out = std::io::stdout().lock();
    let mut last: Option<(bool, Option<i64>)> = None;
    while !stop.load(Ordering::SeqCst) && end.is_none_or(|e| Instant::now() < e) {
        let lease = flags[0].lease();
        let (now, wall) = (Instant::now(), unix_ns());
        let state = (lease.is_some(), lease.map(|l| l.version));
        if last != Some(state) {
            let deadline = lease.map_or(String::new(), |l| {
                let left = l.deadline.saturating_duration_since(now).as_nanos() as i64;
                format!(",\"deadline_unix_ns\":{}", wall + left)
            });
            let line = format!(
                "{{\"t_unix_ns\":{wall},\"process\":\"{}\",\"raised\":{}{deadline}}}\n",
                args.process, state.0
            );
            let _ = out.write_all(line.as_bytes()).and_then(|()| out.flush());
            last = Some(state);
        }
        thread::sleep(args.poll);
    }
    let mut code = 0;
    for flag in flags {
        if let Err(e) = flag.close() {
            eprintln!("peer {}: close: {e}", args.process);
            code = 1;
        }
    }
    eprintln!("peer {}: closed", args.process);
    std::process::exit(code);
}

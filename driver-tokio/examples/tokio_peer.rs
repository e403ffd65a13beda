//! One process competing for a flag, with the command line and output of the Go flag's
//! `seedpeer` (`../shared/peers/go-seed`), so one harness measures both (`bench` in
//! `leadership-bench`).
//!
//! ```sh
//! cargo run --release -p leadership-tokio --example tokio_peer -- \
//!     --url "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable" --name seed --process p1
//! ```
//!
//! Flags (`-flag` or `--flag`, value separate or after `=`): `url` (required), `name` (default
//! `seed`), `process` (default `peer-<pid>`), `interval` (`2s`), `timeout` (`1s`), `jitter`
//! (`0.2`), `poll` (`10ms`), `duration` (`0` = until a signal), `flags` (hold this many flags,
//! `<name>`, `<name>-1`, …, each its own connection; only the first is reported; for memory
//! and load figures), `set` (no value: hold them all in one `FlagSet`, over one connection),
//! `no-batch` (no value: the set sends each flag's single check instead of batches).
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
use std::time::Instant;

use leadership_tokio::Flag;

#[path = "common/peer_args.rs"]
mod peer_args;
use peer_args::{parse_args, unix_ns};
use tokio::signal::unix::{signal, SignalKind};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("peer: {e}");
        std::process::exit(2)
    });
    let name = |i: usize| match i {
        0 => args.name.clone(),
        _ => format!("{}-{i}", args.name),
    };
    let mut flags = Vec::with_capacity(args.flags);
    // `--set`: every flag over one connection (a `FlagSet`) instead of one connection each.
    let set = match args.set {
        false => None,
        true => {
            let set = leadership_tokio::FlagSet::builder(args.process.as_str())
                .connect_str(&args.url)
                .interval(args.interval)
                .timeout(args.timeout)
                .jitter(args.jitter)
                .batch(args.batch)
                .start(tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| {
                    eprintln!("peer {}: start failed: {e}", args.process);
                    std::process::exit(1);
                });
            for i in 0..args.flags {
                flags.push(set.add(name(i)).unwrap_or_else(|e| {
                    eprintln!("peer {}: add failed: {e}", args.process);
                    std::process::exit(1);
                }));
            }
            Some(set)
        }
    };
    for i in 0..if set.is_some() { 0 } else { args.flags } {
        let started = Flag::builder(name(i), args.process.as_str())
            .connect_str(&args.url)
            .interval(args.interval)
            .timeout(args.timeout)
            .jitter(args.jitter)
            .start(tokio_postgres::NoTls)
            .await;
        match started {
            Ok(flag) => flags.push(flag),
            Err(e) => {
                eprintln!("peer {}: start failed: {e}", args.process);
                std::process::exit(1);
            }
        }
    }
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut tick = tokio::time::interval(args.poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let end = (!args.duration.is_zero()).then(|| Instant::now() + args.duration);
    let mut out = std::io::stdout().lock();
    let mut last: Option<(bool, Option<i64>)> = None;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => {}
        }
        if end.is_some_and(|e| Instant::now() >= e) {
            break;
        }
        let lease = flags[0].lease();
        let (now, wall) = (Instant::now(), unix_ns());
        let state = (lease.is_some(), lease.map(|l| l.version));
        if last == Some(state) {
            continue;
        }
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
    let mut code = 0;
    for flag in flags {
        if let Err(e) = flag.close().await {
            eprintln!("peer {}: close: {e}", args.process);
            code = 1;
        }
    }
    eprintln!("peer {}: closed", args.process);
    std::process::exit(code);
}

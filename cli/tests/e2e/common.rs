//! What every end-to-end test uses: the binary, its output, signals, and a child that logs.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use leadership_pgkit::helpers::wait_until;

pub const BIN: &str = env!("CARGO_BIN_EXE_leadership");

/// The tool with arguments, and none of the test's own settings (no `PGPASSWORD`, no
/// `LEADERSHIP_*`, no `DATABASE_URL`): each test says everything it means.
pub fn leadership(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.args(args);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("LEADERSHIP_") || key.starts_with("PG") || key == "DATABASE_URL" {
            command.env_remove(&*key);
        }
    }
    command
}

pub fn output(args: &[&str]) -> Output {
    leadership(args).output().expect("run leadership")
}

pub fn signal(child: &Child, signal: libc::c_int) {
    // SAFETY: kill(2) on a child we spawned and have not reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, signal);
    }
}

/// Waits for a child to exit, killing it after `limit`; its exit code.
pub fn exit_within(child: &mut Child, limit: Duration) -> Option<i32> {
    let end = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the tool did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The JSON lines of a `watch`, with the moment each arrived.
pub struct Lines {
    rx: mpsc::Receiver<(Instant, serde_json::Value)>,
    pub seen: Vec<(Instant, serde_json::Value)>,
}

impl Lines {
    pub fn of(child: &mut Child) -> Lines {
        let out = child.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
                if tx.send((Instant::now(), value)).is_err() {
                    break;
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a line that satisfies `what`, keeping every line read.
    pub fn until(
        &mut self,
        limit: Duration,
        what: impl Fn(&serde_json::Value) -> bool,
    ) -> &serde_json::Value {
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line);
                    if what(&self.seen.last().unwrap().1) {
                        return &self.seen.last().unwrap().1;
                    }
                }
                Err(_) => panic!("no such line within {limit:?}; saw {:?}", self.values()),
            }
        }
    }

    /// Reads every line until the stream ends (the process exited).
    pub fn read_to_end(&mut self, limit: Duration) {
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("the stream did not end"),
            }
        }
    }

    /// Keeps reading for `span`.
    pub fn during(&mut self, span: Duration) {
        let end = Instant::now() + span;
        while let Ok(line) = self
            .rx
            .recv_timeout(end.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line);
        }
    }

    pub fn values(&self) -> Vec<&serde_json::Value> {
        self.seen.iter().map(|(_, v)| v).collect()
    }
}

/// `watch` for flag `name` as `process`, with extra arguments; stdout piped.
pub fn watch(url: &str, name: &str, process: &str, extra: &[&str]) -> Child {
    let mut args = vec!["watch", "--url", url, "--name", name, "--process", process];
    args.extend_from_slice(extra);
    leadership(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// A shell command that, on start, records any earlier command of the log still alive (an
/// overlap), then its token and pid; on SIGTERM it records its stop and exits. Alive means a
/// process state other than zombie in `/proc/<pid>/stat`: a killed child whose parent died stays
/// a zombie until init reaps it, and `kill -0` would count that corpse as running.
pub fn logging_child(log: &Path) -> String {
    let log = log.display();
    format!(
        r#"for p in $(awk '$1 == "start" {{print $3}}' {log}); do s=$(awk '{{print $3}}' /proc/$p/stat 2>/dev/null); [ -n "$s" ] && [ "$s" != Z ] && echo "overlap $p" >> {log}; done
echo "start $LEADERSHIP_TOKEN $$ $LEADERSHIP_PROCESS" >> {log}
trap 'echo "stop $LEADERSHIP_TOKEN $$" >> {log}; exit 0' TERM
while :; do sleep 0.05; done"#
    )
}

/// The log's lines, split into words.
pub fn log_lines(log: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// A port free on the loopback now (bound and let go: another process could take it before
/// the test binds it, which the test would report as a port in use).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on the loopback's `port` over HTTP/1.0 (one request per connection, no chunking):
/// the status code and the body, or `None` if nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

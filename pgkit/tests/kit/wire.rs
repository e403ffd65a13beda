//! A minimal client of the PostgreSQL wire protocol (v3, trust auth only), for facts a driver
//! hides: the `BackendKeyData` a server (or pooler) sends, named statements chosen by the
//! test, notifications arriving on an idle connection, raw cancel requests.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// An `ErrorResponse`, or the connection failing.
#[derive(Debug)]
pub enum WireError {
    Io(io::Error),
    Server {
        severity: String,
        code: String,
        message: String,
    },
}

impl WireError {
    pub fn code(&self) -> Option<&str> {
        match self {
            WireError::Server { code, .. } => Some(code),
            WireError::Io(_) => None,
        }
    }

    pub fn message(&self) -> String {
        match self {
            WireError::Server {
                severity, message, ..
            } => format!("{severity}: {message}"),
            WireError::Io(e) => format!("io: {e}"),
        }
    }
}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> WireError {
        WireError::Io(e)
    }
}

pub type Rows = Vec<Vec<Option<String>>>;

/// A notification: (sender's pid, channel, payload).
pub type Notification = (i32, String, String);

pub struct Wire {
    stream: TcpStream,
    /// From `BackendKeyData`.
    pub pid: i32,
    pub secret: i32,
    pub notifications: Vec<Notification>,
}

impl Wire {
    /// Connects as `postgres` to db `postgres`, with `extra` startup parameters.
    pub fn connect(port: u16, extra: &[(&str, &str)]) -> Result<Wire, WireError> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut w = Wire {
            stream,
            pid: 0,
            secret: 0,
            notifications: Vec::new(),
        };
        let mut body = 196608i32.to_be_bytes().to_vec();
        for (k, v) in [("user", "postgres"), ("database", "postgres")]
            .iter()
            .chain(extra)
        {
            cstr(&mut body, k);
            cstr(&mut body, v);
        }
        body.push(0);
        let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        packet.extend(body);
        w.stream.write_all(&packet)?;
        w.until_ready(&mut Vec::new())?;
        Ok(w)
    }

    fn send(&mut self, tag: u8, body: &[u8]) -> io::Result<()> {
        let mut m = vec![tag];
        m.extend(((body.len() + 4) as i32).to_be_bytes());
        m.extend(body);
        self.stream.write_all(&m)
    }

    fn recv(&mut self) -> io::Result<(u8, Vec<u8>)> {
        let mut head = [0u8; 5];
        self.stream.read_exact(&mut head)?;
        let len = i32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len - 4];
        self.stream.read_exact(&mut body)?;
        Ok((head[0], body))
    }

    /// Reads until `ReadyForQuery`, collecting rows; the first `ErrorResponse` becomes the
    /// result (after `ReadyForQuery`, so the connection stays usable).
    fn until_ready(&mut self, rows: &mut Rows) -> Result<(), WireError> {
        let mut error = None;
        loop {
            let (tag, body) = self.recv()?;
            match tag {
                b'Z' => return error.map_or(Ok(()), Err),
                b'E' => {
                    let e = parse_error(&body);
                    // A FATAL error at login is followed by the server closing: no 'Z'.
                    if matches!(&e, WireError::Server { severity, .. } if severity == "FATAL") {
                        return Err(e);
                    }
                    error.get_or_insert(e);
                }
                b'K' => {
                    self.pid = i32::from_be_bytes(body[0..4].try_into().unwrap());
                    self.secret = i32::from_be_bytes(body[4..8].try_into().unwrap());
                }
                b'A' => self.notifications.push(parse_notification(&body)),
                b'D' => rows.push(parse_row(&body)),
                b'R' => {
                    let kind = i32::from_be_bytes(body[0..4].try_into().unwrap());
                    if kind != 0 {
                        return Err(WireError::Io(io::Error::other(format!(
                            "authentication method {kind} requested; only trust is supported"
                        ))));
                    }
                }
                _ => {} // ParameterStatus, RowDescription, CommandComplete, ParseComplete...
            }
        }
    }

    /// A simple query; its rows as text.
    pub fn query(&mut self, sql: &str) -> Result<Rows, WireError> {
        let mut body = Vec::new();
        cstr(&mut body, sql);
        self.send(b'Q', &body)?;
        let mut rows = Vec::new();
        self.until_ready(&mut rows)?;
        Ok(rows)
    }

    /// The first column of the first row of `sql`.
    pub fn one(&mut self, sql: &str) -> Result<String, WireError> {
        let rows = self.query(sql)?;
        Ok(rows[0][0].clone().unwrap_or_default())
    }

    /// `Parse` of a named statement without parameters, then `Sync`.
    pub fn parse(&mut self, name: &str, sql: &str) -> Result<(), WireError> {
        let mut body = Vec::new();
        cstr(&mut body, name);
        cstr(&mut body, sql);
        body.extend(0i16.to_be_bytes());
        self.send(b'P', &body)?;
        self.send(b'S', &[])?;
        self.until_ready(&mut Vec::new())
    }

    /// `Bind` (no parameters, text results), `Execute`, `Sync` of a named statement.
    pub fn execute(&mut self, name: &str) -> Result<Rows, WireError> {
        let mut bind = Vec::new();
        cstr(&mut bind, "");
        cstr(&mut bind, name);
        bind.extend(0i16.to_be_bytes()); // parameter formats
        bind.extend(0i16.to_be_bytes()); // parameters
        bind.extend(0i16.to_be_bytes()); // result formats: all text
        self.send(b'B', &bind)?;
        let mut exec = Vec::new();
        cstr(&mut exec, "");
        exec.extend(0i32.to_be_bytes());
        self.send(b'E', &exec)?;
        self.send(b'S', &[])?;
        let mut rows = Vec::new();
        self.until_ready(&mut rows)?;
        Ok(rows)
    }

    /// Waits up to `timeout` for an asynchronous message on an idle connection; returns the
    /// notifications received, or the error if the connection closed (`Ok` empty on timeout).
    pub fn wait_idle(&mut self, timeout: Duration) -> Result<Vec<Notification>, WireError> {
        self.stream.set_read_timeout(Some(timeout))?;
        let got = self.recv();
        self.stream
            .set_read_timeout(Some(Duration::from_secs(30)))?;
        match got {
            Ok((b'A', body)) => self.notifications.push(parse_notification(&body)),
            Ok((b'E', body)) => return Err(parse_error(&body)),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(WireError::Io(e)),
        }
        Ok(std::mem::take(&mut self.notifications))
    }
}

fn cstr(buf: &mut Vec<u8>, s: &str) {
    buf.extend(s.as_bytes());
    buf.push(0);
}

fn take_cstr(body: &[u8], at: &mut usize) -> String {
    let end = body[*at..].iter().position(|&b| b == 0).unwrap() + *at;
    let s = String::from_utf8_lossy(&body[*at..end]).into_owned();
    *at = end + 1;
    s
}

fn parse_error(body: &[u8]) -> WireError {
    let (mut severity, mut code, mut message) = (String::new(), String::new(), String::new());
    let mut at = 0;
    while at < body.len() && body[at] != 0 {
        let field = body[at];
        at += 1;
        let value = take_cstr(body, &mut at);
        match field {
            // 'V' is the untranslated severity (PostgreSQL 9.6+); pgbouncer sends only 'S'.
            b'V' => severity = value,
            b'S' if severity.is_empty() => severity = value,
            b'C' => code = value,
            b'M' => message = value,
            _ => {}
        }
    }
    WireError::Server {
        severity,
        code,
        message,
    }
}

fn parse_notification(body: &[u8]) -> Notification {
    let pid = i32::from_be_bytes(body[0..4].try_into().unwrap());
    let mut at = 4;
    let channel = take_cstr(body, &mut at);
    let payload = take_cstr(body, &mut at);
    (pid, channel, payload)
}

fn parse_row(body: &[u8]) -> Vec<Option<String>> {
    let n = i16::from_be_bytes(body[0..2].try_into().unwrap());
    let mut at = 2;
    (0..n)
        .map(|_| {
            let len = i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
            at += 4;
            (len >= 0).then(|| {
                let v = String::from_utf8_lossy(&body[at..at + len as usize]).into_owned();
                at += len as usize;
                v
            })
        })
        .collect()
}

/// Sends a `CancelRequest` for (`pid`, `secret`) to `port` as libpq's `PQcancel` does: write
/// the packet, then wait for the other side to close (it answers nothing). With `half_close`,
/// shut down the write side right after the packet instead, as tokio-postgres'
/// `cancel_query` does.
pub fn cancel(port: u16, pid: i32, secret: i32, half_close: bool) -> io::Result<()> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    let mut packet = 16i32.to_be_bytes().to_vec();
    packet.extend(80877102i32.to_be_bytes());
    packet.extend(pid.to_be_bytes());
    packet.extend(secret.to_be_bytes());
    s.write_all(&packet)?;
    if half_close {
        s.shutdown(std::net::Shutdown::Write)?;
    }
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let _ = s.read(&mut [0u8; 1]);
    Ok(())
}

impl Wire {
    /// Sends a simple query without waiting for its answer (see [`Wire::finish`]).
    pub fn send_query(&mut self, sql: &str) -> io::Result<()> {
        let mut body = Vec::new();
        cstr(&mut body, sql);
        self.send(b'Q', &body)
    }

    /// Reads the answer of a query sent with [`Wire::send_query`].
    pub fn finish(&mut self) -> Result<Rows, WireError> {
        let mut rows = Vec::new();
        self.until_ready(&mut rows)?;
        Ok(rows)
    }
}

//! Takes libpq's TLS keys out of a connection string, leaving the rest, byte for byte, to
//! `tokio_postgres::Config::from_str`. The grammar is `tokio_postgres`'s own: where this
//! tokenizer gives up, the remainder is passed on unchanged and `tokio_postgres` reports the
//! error, so both agree on what a string means.

use std::borrow::Cow;

use super::TlsError;

/// A TLS key this module implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Setting {
    Mode,
    RootCert,
    Cert,
    Key,
}

impl Setting {
    const ALL: [Setting; 4] = [
        Setting::Mode,
        Setting::RootCert,
        Setting::Cert,
        Setting::Key,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Setting::Mode => "sslmode",
            Setting::RootCert => "sslrootcert",
            Setting::Cert => "sslcert",
            Setting::Key => "sslkey",
        }
    }

    /// libpq's environment variable for the key.
    pub(crate) fn env_var(self) -> &'static str {
        match self {
            Setting::Mode => "PGSSLMODE",
            Setting::RootCert => "PGSSLROOTCERT",
            Setting::Cert => "PGSSLCERT",
            Setting::Key => "PGSSLKEY",
        }
    }
}

/// libpq's other TLS keys: refused by name rather than by `tokio_postgres`'s "unknown option".
const UNSUPPORTED: [&str; 8] = [
    "sslpassword",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "sslcertmode",
    "sslcompression",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
];

/// Which TLS key `name` is: `None` for every other key (left to `tokio_postgres`).
fn classify(name: &str) -> Result<Option<Setting>, TlsError> {
    if let Some(unsupported) = UNSUPPORTED.into_iter().find(|u| *u == name) {
        return Err(TlsError::Unsupported(unsupported));
    }
    Ok(Setting::ALL.into_iter().find(|key| key.name() == name))
}

/// A connection string without its TLS keys, and their values.
#[derive(Debug)]
pub(crate) struct Split {
    /// The string for `tokio_postgres`.
    pub(crate) rest: String,
    values: Vec<(Setting, String)>,
}

impl Split {
    /// The key's value; the last one when the key is repeated, as libpq.
    pub(crate) fn get(&self, key: Setting) -> Option<&str> {
        self.values
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}

pub(crate) fn split(conn: &str) -> Result<Split, TlsError> {
    match ["postgres://", "postgresql://"]
        .into_iter()
        .find(|prefix| conn.starts_with(prefix))
    {
        Some(prefix) => split_url(conn, prefix.len()),
        None => split_key_value(conn),
    }
}

/// `postgres://[user[:password]@][host][/dbname][?key=value&…]`. As `tokio_postgres`, the
/// credentials run to the first `@`, so a `?` in a password does not start the query.
fn split_url(conn: &str, prefix: usize) -> Result<Split, TlsError> {
    let after_credentials = conn[prefix..]
        .find('@')
        .map_or(prefix, |at| prefix + at + 1);
    let Some(question) = conn[after_credentials..].find('?') else {
        return Ok(Split {
            rest: conn.to_string(),
            values: Vec::new(),
        });
    };
    let query = after_credentials + question;
    let mut kept = Vec::new();
    let mut values = Vec::new();
    for param in conn[query + 1..].split('&') {
        let tls = param.split_once('=').and_then(|(key, value)| {
            let key = decode(key).ok()?;
            Some((key, value))
        });
        match tls {
            Some((key, value)) => match classify(&key)? {
                Some(key) => {
                    let value = decode(value).map_err(|()| {
                        TlsError::Syntax("a TLS value of the URL is not UTF-8 once decoded")
                    })?;
                    values.push((key, value.into_owned()));
                }
                None => kept.push(param),
            },
            None => kept.push(param),
        }
    }
    let mut rest = conn[..query].to_string();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    Ok(Split { rest, values })
}

fn decode(s: &str) -> Result<Cow<'_, str>, ()> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map_err(|_| ())
}

/// `key = value` pairs separated by white space; a value is bare (up to white space) or
/// single-quoted, with `\` escaping the next character in both.
fn split_key_value(conn: &str) -> Result<Split, TlsError> {
    let mut tokens = Tokens { s: conn, pos: 0 };
    let mut rest = String::new();
    let mut kept_from = 0;
    let mut values = Vec::new();
    while let Some((start, key, value)) = tokens.parameter() {
        if let Some(key) = classify(key)? {
            rest.push_str(&conn[kept_from..start]);
            kept_from = tokens.pos;
            values.push((key, value));
        }
    }
    rest.push_str(&conn[kept_from..]);
    Ok(Split { rest, values })
}

struct Tokens<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Tokens<'a> {
    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    /// The next parameter: where it starts, its key and its unescaped value. `None` at the end
    /// and wherever `tokio_postgres` would report an error.
    fn parameter(&mut self) -> Option<(usize, &'a str, String)> {
        self.skip_ws();
        let start = self.pos;
        while self.peek().is_some_and(|c| !c.is_whitespace() && c != '=') {
            self.bump();
        }
        let key = &self.s[start..self.pos];
        if key.is_empty() {
            return None;
        }
        self.skip_ws();
        if self.bump() != Some('=') {
            return None;
        }
        self.skip_ws();
        let quoted = self.peek() == Some('\'');
        if quoted {
            self.bump();
        }
        let mut value = String::new();
        loop {
            match self.peek() {
                None if quoted => return None,
                None => break,
                Some('\'') if quoted => {
                    self.bump();
                    break;
                }
                Some(c) if c.is_whitespace() && !quoted => break,
                Some('\\') => {
                    self.bump();
                    value.extend(self.bump());
                }
                Some(c) => {
                    self.bump();
                    value.push(c);
                }
            }
        }
        if value.is_empty() && !quoted {
            return None;
        }
        Some((start, key, value))
    }
}

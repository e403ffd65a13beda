//! SIGTERM and SIGINT, the two ways an operator or a supervisor stops the tool.

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::exit::{Failure, FAILURE};

pub struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Installs the handlers; do this before anything slow, so an early signal is not fatal.
    pub fn new() -> Result<Signals, Failure> {
        let install = |kind| signal(kind).map_err(|e| Failure::new(FAILURE, e.to_string()));
        Ok(Signals {
            term: install(SignalKind::terminate())?,
            int: install(SignalKind::interrupt())?,
        })
    }

    /// The next SIGTERM or SIGINT.
    pub async fn recv(&mut self) -> libc::c_int {
        tokio::select! {
            _ = self.term.recv() => libc::SIGTERM,
            _ = self.int.recv() => libc::SIGINT,
        }
    }
}

//! The signals that stop the tool: SIGTERM and SIGINT (an operator or a supervisor), SIGHUP (a
//! closed terminal) and SIGQUIT, all handled alike.

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::exit::{Failure, FAILURE};

pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
    quit: Signal,
}

impl Signals {
    /// Installs the handlers; do this before anything slow, so an early signal is not fatal.
    pub fn new() -> Result<Signals, Failure> {
        let install = |kind| signal(kind).map_err(|e| Failure::new(FAILURE, e.to_string()));
        Ok(Signals {
            term: install(SignalKind::terminate())?,
            int: install(SignalKind::interrupt())?,
            hup: install(SignalKind::hangup())?,
            quit: install(SignalKind::quit())?,
        })
    }

    /// The next of them.
    pub async fn recv(&mut self) -> libc::c_int {
        tokio::select! {
            _ = self.term.recv() => libc::SIGTERM,
            _ = self.int.recv() => libc::SIGINT,
            _ = self.hup.recv() => libc::SIGHUP,
            _ = self.quit.recv() => libc::SIGQUIT,
        }
    }
}

//! [`Subscription`]: the state as it changes, read by a blocking thread.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::runtime::Runtime;
use crate::State;

/// The [`State`] of a flag as it changes, from [`Flag::subscribe`](crate::Flag::subscribe).
/// Bounded: it holds the latest state only, so a reader that falls behind skips intermediate
/// states and never the latest, and nothing grows while nobody reads. Iterating blocks until
/// the next change and ends when the driver has stopped.
#[derive(Debug)]
pub struct Subscription {
    rx: watch::Receiver<State>,
    runtime: Arc<Runtime>,
}

impl Subscription {
    pub(crate) fn new(mut rx: watch::Receiver<State>, runtime: Arc<Runtime>) -> Subscription {
        // The first read returns the current state at once.
        rx.mark_changed();
        Subscription { rx, runtime }
    }

    /// Waits up to `timeout` for a state not yet read; `None` if none came (or the driver
    /// has stopped).
    ///
    /// ```no_run
    /// # fn demo(flag: &leadership_blocking::Flag) {
    /// let mut states = flag.subscribe();
    /// while let Some(state) = states.recv_timeout(std::time::Duration::from_secs(1)) {
    ///     println!("{state:?}");
    /// }
    /// # }
    /// ```
    pub fn recv_timeout(&mut self, timeout: Duration) -> Option<State> {
        let Subscription { rx, runtime } = self;
        let changed = runtime.block_on(async { tokio::time::timeout(timeout, rx.changed()).await });
        match changed {
            Ok(Ok(())) => Some(rx.borrow_and_update().clone()),
            _ => None,
        }
    }
}

impl Iterator for Subscription {
    type Item = State;

    /// Blocks until a state not yet read; `None` once the driver has stopped.
    fn next(&mut self) -> Option<State> {
        let Subscription { rx, runtime } = self;
        runtime.block_on(rx.changed()).ok()?;
        Some(rx.borrow_and_update().clone())
    }
}

//! [`Subscription`]: the state as it changes, read by a blocking thread.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::runtime::Runtime;
use crate::State;

/// The [`State`] of a flag as it changes, from [`Flag::subscribe`](crate::Flag::subscribe):
/// transitions only (raised, a new term, at risk and back, lowered). Bounded: it holds the
/// latest state only, so a reader that falls behind skips intermediate states and never the
/// latest, and nothing grows while nobody reads. Iterating blocks until the next change, and
/// ends once the flag is closed (after the last state, `Lowered`) or its driver is gone.
pub struct Subscription {
    rx: watch::Receiver<State>,
    /// Resolves once the flag is closed and its driver has finished.
    finished: Pin<Box<dyn Future<Output = ()> + Send>>,
    done: bool,
    runtime: Arc<Runtime>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("state", &*self.rx.borrow())
            .finish_non_exhaustive()
    }
}

impl Subscription {
    pub(crate) fn new(flag: &leadership_tokio::Flag, runtime: Arc<Runtime>) -> Subscription {
        let mut rx = flag.subscribe();
        // The first read returns the current state at once.
        rx.mark_changed();
        Subscription {
            rx,
            finished: Box::pin(flag.finished()),
            done: false,
            runtime,
        }
    }

    /// The next state not yet read, waiting up to `timeout` for one if given; `None` if none
    /// came, or once the flag is closed and its last state read.
    fn next_within(&mut self, timeout: Option<Duration>) -> Option<State> {
        let Subscription {
            rx,
            finished,
            done,
            runtime,
        } = self;
        if rx.has_changed().unwrap_or(false) {
            return Some(*rx.borrow_and_update());
        }
        if *done {
            return None;
        }
        let wait = async {
            tokio::select! {
                changed = rx.changed() => changed.is_ok(),
                () = finished.as_mut() => false,
            }
        };
        let changed = runtime.block_on(async {
            match timeout {
                Some(t) => tokio::time::timeout(t, wait).await.ok(),
                None => Some(wait.await),
            }
        });
        match changed {
            Some(true) => Some(*rx.borrow_and_update()),
            Some(false) => {
                *done = true;
                // A last change published as the driver finished.
                rx.has_changed()
                    .unwrap_or(false)
                    .then(|| *rx.borrow_and_update())
            }
            None => None,
        }
    }

    /// Waits up to `timeout` for a state not yet read; `None` if none came (or the flag is
    /// closed and its last state read).
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
        self.next_within(Some(timeout))
    }
}

impl Iterator for Subscription {
    type Item = State;

    /// Blocks until a state not yet read; `None` once the flag is closed and its last state
    /// read.
    fn next(&mut self) -> Option<State> {
        self.next_within(None)
    }
}

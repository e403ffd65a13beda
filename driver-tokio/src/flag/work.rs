//! Running the leader-only work: [`Flag::lead`]'s loop (shared with the blocking driver
//! through [`Flag::next_run`]) and [`Flag::try_lead`] for jobs that run once across a fleet.

use std::future::Future;

use crate::error::Error;
use crate::guard::Guard;
use crate::state::Holder;

use super::Flag;

/// How the last run of the work in [`Flag::lead`] ended (the loop of both drivers' `lead`).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastRun {
    /// Its term.
    pub token: i64,
    /// It was told to stop (at risk, or the term ended), rather than returning by itself.
    pub stopped: bool,
}

/// What [`Flag::try_lead`] found.
#[derive(Debug)]
pub enum TryLead {
    /// This process leads: the guard of the term.
    Led(Guard),
    /// Another process holds the flag (as the last check saw it).
    HeldBy(Holder),
}

impl Flag {
    /// Runs `work` while this process leads, until the flag is closed: once for each term, and
    /// again within a term after the lease was at risk and a renew won. The work gets the
    /// term's [`Guard`]: it should stop when [`Guard::at_risk`] fires (or its
    /// [`Guard::stop_token`] is cancelled), so that it is over by the deadline, and fence its
    /// writes with [`Guard::token`]. `lead` waits for the work to return before the next run
    /// and before a [`close`](Flag::close) releases the row; a work that returns by itself
    /// mid-term is not run again until the next term.
    ///
    /// Returns `Ok` once the flag is closed (by any clone, or by the shutdown token), or
    /// [`Error::DriverGone`] if the driver task died.
    ///
    /// ```no_run
    /// # async fn demo(flag: leadership_tokio::Flag) -> Result<(), leadership_tokio::Error> {
    /// flag.lead(|guard| async move {
    ///     let stop = guard.stop_token();
    ///     while !stop.is_cancelled() {
    ///         // one step of the leader's work, fenced with guard.token()
    ///         tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    ///     }
    /// })
    /// .await
    /// # }
    /// ```
    pub async fn lead<F, Fut>(&self, mut work: F) -> Result<(), Error>
    where
        F: FnMut(Guard) -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut last = None;
        while let Some(guard) = self.next_run(last).await? {
            let token = guard.token();
            let run = work(guard);
            tokio::pin!(run);
            let stopped = tokio::select! {
                () = &mut run => false,
                () = self.inner.signals.wait(token, true) => {
                    // Told to stop (its guard says so too): wait for it to return.
                    run.await;
                    true
                }
            };
            last = Some(LastRun { token, stopped });
        }
        Ok(())
    }

    /// The guard for the next run of the leader-only work in [`lead`](Flag::lead): as soon as
    /// this process leads and its lease is not at risk, except that a work that returned by
    /// itself (not `stopped`) is not run again in the same term. `None` once the flag is
    /// closed. The loop of both drivers' `lead`.
    #[doc(hidden)]
    pub async fn next_run(&self, last: Option<LastRun>) -> Result<Option<Guard>, Error> {
        loop {
            let guard = match self.guard_when(true).await {
                Ok(guard) => guard,
                Err(_) if self.inner.close.is_cancelled() => return Ok(None),
                Err(e) => return Err(e),
            };
            match last {
                Some(LastRun {
                    token,
                    stopped: false,
                }) if token == guard.token() => {
                    // Finished by itself in this term: wait for the term to end, holding no
                    // guard (a close must not wait for this).
                    drop(guard);
                    self.inner.signals.wait(token, false).await;
                }
                _ => return Ok(Some(guard)),
            }
        }
    }

    /// Waits for the first check to answer, then: [`TryLead::Led`] with the term's guard if
    /// this process leads, or [`TryLead::HeldBy`] with the holder the check saw. One round
    /// trip on a fresh flag; at once afterwards. [`Error::Closed`] once the flag has closed (or
    /// [`Error::DriverGone`]). For jobs that run once across a fleet: do the work on `Led`, skip it on
    /// `HeldBy`.
    ///
    /// ```no_run
    /// # async fn demo(flag: leadership_tokio::Flag) -> Result<(), leadership_tokio::Error> {
    /// use leadership_tokio::TryLead;
    /// match flag.try_lead().await? {
    ///     TryLead::Led(guard) => println!("running the job with token {}", guard.token()),
    ///     TryLead::HeldBy(holder) => println!("{:?} runs it", holder.name),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn try_lead(&self) -> Result<TryLead, Error> {
        let mut term = self.inner.signals.subscribe_term();
        let mut outcome = self.inner.outcome.clone();
        loop {
            term.borrow_and_update();
            if let Some(ended) = self.ended(*outcome.borrow_and_update()) {
                return Err(ended);
            }
            if let Some(guard) = Guard::current(&self.inner.signals, false) {
                return Ok(TryLead::Led(guard));
            }
            if let Some(holder) = self.current_holder() {
                // A check answered without a win for us: the row's holder is someone else,
                // or nobody could take it yet (a row of ours that lapsed counts as held).
                return Ok(TryLead::HeldBy(holder));
            }
            let mut holder = self.inner.signals.subscribe_holder();
            tokio::select! {
                changed = term.changed() => if changed.is_err() { return Err(Error::DriverGone) },
                _ = holder.changed() => {}
                _ = outcome.changed() => {}
            }
        }
    }
}

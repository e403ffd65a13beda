//! [`Guard`]: a term of leadership, as the tokio driver's guard with blocking waits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::runtime::Runtime;

/// A term of leadership held by leader-only work, from
/// [`Flag::wait_raised`](crate::Flag::wait_raised): the term's fencing token and deadline, and
/// whether the term has ended. On a close or a refused precheck the row is released only
/// after every guard has been dropped, so drop it when the work has stopped, not before. See
/// [`leadership_tokio::Guard`].
///
/// ```no_run
/// use std::time::Duration;
/// # fn step(_token: i64) {}
/// # fn demo(flag: leadership_blocking::Flag) -> Result<(), leadership_blocking::Error> {
/// if let Some(guard) = flag.wait_raised(Duration::from_secs(60)) {
///     // Guards outlive borrows of the flag: hand one to the thread doing the work.
///     let work = std::thread::spawn(move || {
///         while !guard.is_lost() {
///             step(guard.token()); // fence writes elsewhere with the token
///         }
///     }); // the guard is dropped when the work has stopped
///     flag.close()?; // the guard is lost at once; the row goes once it is dropped
///     work.join().expect("the work thread");
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Guard {
    inner: leadership_tokio::Guard,
    runtime: Arc<Runtime>,
}

impl Guard {
    pub(crate) fn wrap(inner: leadership_tokio::Guard, runtime: Arc<Runtime>) -> Guard {
        Guard { inner, runtime }
    }

    /// The fencing token: the row version at which this term was won.
    pub fn token(&self) -> i64 {
        self.inner.token()
    }

    /// This term's fence: the statement and its values (see [`leadership_tokio::Fence`]).
    pub fn fence(&self) -> leadership_tokio::Fence {
        self.inner.fence()
    }

    /// Runs this term's fence first in `transaction` (a `postgres::Transaction`, or a `Client`
    /// inside a transaction block begun by hand), on the database that holds the flags: `Ok`
    /// means the transaction's writes commit while this term holds the flag, or not at all.
    /// See [`leadership_tokio::Guard::fence_in`].
    ///
    /// ```no_run
    /// # fn demo(guard: &leadership_blocking::Guard, db: &mut postgres::Client)
    /// # -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = db.transaction()?;
    /// guard.fence_in(&mut tx)?; // the term is over: the error, and no commit
    /// tx.execute("INSERT INTO report_runs (token) VALUES ($1)", &[&guard.token()])?;
    /// tx.commit()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn fence_in<C: postgres::GenericClient>(
        &self,
        transaction: &mut C,
    ) -> Result<(), crate::FenceError> {
        let fence = self.inner.fence();
        if self.inner.is_lost() {
            return Err(fence.error_term_over());
        }
        transaction
            .query_typed(fence.sql(), &fence.params())
            .map(drop)
            .map_err(|e| fence.error(e))
    }

    /// The current lease's deadline (moved by each renew of this term).
    pub fn deadline(&self) -> Instant {
        self.inner.deadline()
    }

    /// Whether the term has ended (by the state and the clock, now).
    pub fn is_lost(&self) -> bool {
        self.inner.is_lost()
    }

    /// Whether the work should be stopping: the lease is at risk (no renew has won by the
    /// deadline minus the stop-ahead) or the term has ended.
    pub fn is_at_risk(&self) -> bool {
        self.inner.is_at_risk()
    }

    /// Waits up to `timeout` for the lease to be at risk (or the term to end); `true` if it
    /// is.
    ///
    /// ```no_run
    /// # fn demo(guard: &leadership_blocking::Guard) {
    /// if guard.wait_at_risk(std::time::Duration::from_millis(100)) { /* stop the work */ }
    /// # }
    /// ```
    pub fn wait_at_risk(&self, timeout: Duration) -> bool {
        self.runtime
            .block_on(async { tokio::time::timeout(timeout, self.inner.at_risk()).await })
            .is_ok()
    }

    /// Waits up to `timeout` for the term to end; `true` if it has.
    ///
    /// ```no_run
    /// # fn demo(guard: &leadership_blocking::Guard) {
    /// if guard.wait_lost(std::time::Duration::from_secs(1)) { /* stop the work */ }
    /// # }
    /// ```
    pub fn wait_lost(&self, timeout: Duration) -> bool {
        self.runtime
            .block_on(async { tokio::time::timeout(timeout, self.inner.lost()).await })
            .is_ok()
    }
}

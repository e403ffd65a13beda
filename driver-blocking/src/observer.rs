//! [`Observer`]: who holds a flag, without competing, for blocking code.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::runtime::Runtime;
use crate::Holder;

/// Watches one flag without competing for it, from
/// [`FlagBuilder::observe`](crate::FlagBuilder::observe): the blocking face of
/// [`leadership_tokio::Observer`] (told of hand-overs through `LISTEN`, of expiries on the
/// lease's schedule; no polling).
///
/// ```no_run
/// # fn demo() -> Result<(), leadership_blocking::Error> {
/// use std::time::Duration;
/// let observer = leadership_blocking::Flag::builder("api-writer", "router")
///     .connect_str("host=db user=app")
///     .observe(postgres::NoTls)?;
/// while let Some(holder) = observer.wait_changed(Duration::from_secs(60)) {
///     println!("now held by {:?}", holder.and_then(|h| h.name));
/// }
/// # Ok(()) }
/// ```
pub struct Observer {
    inner: leadership_tokio::Observer,
    changes: std::sync::Mutex<watch::Receiver<Option<Holder>>>,
    runtime: Arc<Runtime>,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl Observer {
    pub(crate) fn wrap(inner: leadership_tokio::Observer, runtime: Arc<Runtime>) -> Observer {
        let changes = std::sync::Mutex::new(inner.subscribe());
        Observer {
            inner,
            changes,
            runtime,
        }
    }

    /// Who held the flag at the last read; `None` before the first read returns.
    pub fn holder(&self) -> Option<Holder> {
        self.inner.holder()
    }

    /// Waits up to `timeout` for the holder to change (a new holder, version or expiry) and
    /// returns it; `None` if nothing changed in time. The first call returns the current
    /// holder at once.
    pub fn wait_changed(&self, timeout: Duration) -> Option<Option<Holder>> {
        let mut changes = self
            .changes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let changed = self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, changes.changed()).await });
        match changed {
            Ok(Ok(())) => Some(changes.borrow_and_update().clone()),
            _ => None,
        }
    }
}

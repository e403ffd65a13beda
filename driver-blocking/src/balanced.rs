//! [`Balanced`]: the blocking face of [`leadership_tokio::Balanced`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use crate::flag::{Flag, FlagSet};
use crate::runtime::Runtime;
use crate::Error;
pub use leadership_tokio::{Assignment, Ownership};

/// A balanced group of shards shared by a fleet, each process leading about its share; see
/// [`leadership_tokio::Balanced`] for the design. Made by [`FlagSet::balanced`]; every shard
/// is a blocking [`Flag`].
///
/// ```no_run
/// use std::time::Duration;
/// use leadership_blocking::{FlagSet, Ownership};
///
/// let set = FlagSet::builder("pod-a")
///     .connect_str("host=db user=app")
///     .start(postgres::NoTls)?;
/// let shards = set.balanced("orders", 64)?;
/// let mut changes = shards.subscribe_ownership();
/// while let Some(change) = changes.recv_timeout(Duration::from_secs(60)) {
///     if let Ownership::Owning(i) = change {
///         println!("shard {i}, token {:?}", shards.shard(i).lease().map(|l| l.token));
///     }
/// }
/// shards.close()?;
/// # Ok::<(), leadership_blocking::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Balanced {
    inner: leadership_tokio::Balanced,
    shards: Vec<Flag>,
    member: Flag,
    runtime: Arc<Runtime>,
}

impl FlagSet {
    /// Joins the balanced group `group` of `shards` shards; see
    /// [`leadership_tokio::FlagSet::balanced`].
    ///
    /// ```no_run
    /// # fn demo(set: &leadership_blocking::FlagSet) -> Result<(), leadership_blocking::Error> {
    /// let shards = set.balanced("orders", 64)?;
    /// # Ok(()) }
    /// ```
    pub fn balanced(&self, group: &str, shards: usize) -> Result<Balanced, Error> {
        let runtime = self.runtime().clone();
        let inner = {
            let _entered = runtime.enter();
            self.tokio().balanced(group, shards)?
        };
        let shards = inner
            .shards()
            .iter()
            .map(|f| Flag::wrap(f.clone(), runtime.clone()))
            .collect();
        let member = Flag::wrap(inner.member().clone(), runtime.clone());
        Ok(Balanced {
            inner,
            shards,
            member,
            runtime,
        })
    }
}

impl Balanced {
    /// The group's name.
    pub fn group(&self) -> &str {
        self.inner.group()
    }

    /// How many shards the group has.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Whether the group has no shards.
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// Shard `index`'s flag. Panics if `index` is out of range.
    pub fn shard(&self, index: usize) -> &Flag {
        &self.shards[index]
    }

    /// Every shard's flag, by index.
    pub fn shards(&self) -> &[Flag] {
        &self.shards
    }

    /// This process's member flag (its heartbeat in the group).
    pub fn member(&self) -> &Flag {
        &self.member
    }

    /// The shards this process leads now.
    pub fn owned(&self) -> Vec<usize> {
        self.inner.owned()
    }

    /// What the latest scan showed and which shards this process wants.
    pub fn assignment(&self) -> Assignment {
        self.inner.assignment()
    }

    /// A blocking stream of [`Ownership`] changes, from now on.
    pub fn subscribe_ownership(&self) -> OwnershipSubscription {
        let _entered = self.runtime.enter();
        OwnershipSubscription {
            rx: self.inner.subscribe_ownership(),
            runtime: self.runtime.clone(),
        }
    }

    /// Leaves the group gracefully; see [`leadership_tokio::Balanced::close`].
    pub fn close(&self) -> Result<(), Error> {
        self.runtime.block_on(self.inner.close())
    }
}

/// [`Ownership`] changes of a [`Balanced`] group, received by blocking.
#[derive(Debug)]
pub struct OwnershipSubscription {
    rx: broadcast::Receiver<Ownership>,
    runtime: Arc<Runtime>,
}

impl OwnershipSubscription {
    /// The next change, waiting up to `timeout`; `None` on timeout or once the group is gone.
    /// A receiver that fell behind skips what it missed (call [`Balanced::owned`] to
    /// resynchronise).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Option<Ownership> {
        let rx = &mut self.rx;
        self.runtime.block_on(async {
            tokio::time::timeout(timeout, async {
                loop {
                    match rx.recv().await {
                        Ok(change) => return Some(change),
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            })
            .await
            .ok()
            .flatten()
        })
    }

    /// The next change if one is waiting.
    pub fn try_recv(&mut self) -> Option<Ownership> {
        loop {
            match self.rx.try_recv() {
                Ok(change) => return Some(change),
                Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    }
}

//! [`Parts`]: what a flag's driver task is made of, built by the builder and handed through
//! [`Flag::spawn`](crate::Flag) to the driver as one value; and the two pieces only some flags
//! have: the user's precheck ([`PrecheckFn`]) and a balanced set's hooks ([`Shard`]).

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::Arc;

use leadership_core::Config;
use tokio::sync::{mpsc, watch, Notify};

use crate::batch::Member;
use crate::link::Link;
use crate::recorder::Metrics;

/// Everything one flag's driver owns, from the builder (or the set that added the flag).
pub(crate) struct Parts {
    /// The core's configuration, validated.
    pub(crate) config: Config,
    /// The core's schedule seed: processes (and flags of one set) must not share one.
    pub(crate) seed: u64,
    /// The connection, shared by the flags of a set.
    pub(crate) link: Arc<Link>,
    /// A wake-up for each notified release of this flag; `None` where there is no route.
    pub(crate) notifications: Option<mpsc::Receiver<()>>,
    pub(crate) metrics: Metrics,
    pub(crate) precheck: Option<PrecheckFn>,
    /// Set for a shard of a balanced set.
    pub(crate) shard: Option<Shard>,
    /// The flag's place in its set's batch; `None` for a flag of its own, which sends the
    /// single check.
    pub(crate) batch: Option<Member>,
}

/// The user's precheck, boxed: `Ok(true)` lets the check run, `Ok(false)` refuses, an error is
/// logged and counts as a refusal.
pub(crate) type PrecheckFn =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<bool, String>> + Send>> + Send + Sync>;

/// What makes a flag a shard of a balanced set: the switch by which the balance wants it or
/// not ([`Input::Wanted`](leadership_core::Input::Wanted)), and the wake-up by which it
/// asks for the group to be read again (a release it heard of while dormant).
pub(crate) struct Shard {
    pub(crate) wanted: watch::Receiver<bool>,
    pub(crate) rescan: Arc<Notify>,
}

/// A seed from the standard library's per-process random hasher keys: enough to keep processes
/// from sharing a schedule, without a dependency on `rand`.
pub(crate) fn random_seed() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

//! One process of a measured fleet: a `FlagSet` on a tokio runtime of its own (one worker
//! thread) and a connection of its own, in this bench process.

use std::time::Duration;

use leadership_tokio::FlagSet;
use tokio_postgres::NoTls;

/// How a fleet's sets are built.
#[derive(Clone, Debug)]
pub(crate) struct SetSettings {
    pub(crate) conn: String,
    pub(crate) interval: Duration,
    /// `None`: the core's default for the interval.
    pub(crate) timeout: Option<Duration>,
    pub(crate) batch: bool,
}

pub(crate) struct SetProcess {
    pub(crate) runtime: tokio::runtime::Runtime,
    pub(crate) set: FlagSet,
}

impl SetProcess {
    pub(crate) fn start(settings: &SetSettings, process: &str) -> SetProcess {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let set = runtime.block_on(async {
            let mut builder = FlagSet::builder(process)
                .connect_str(&settings.conn)
                .interval(settings.interval)
                .batch(settings.batch);
            if let Some(timeout) = settings.timeout {
                builder = builder.timeout(timeout);
            }
            builder.start(NoTls).await.expect("start a FlagSet")
        });
        SetProcess { runtime, set }
    }
}

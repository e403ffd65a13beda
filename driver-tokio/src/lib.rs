//! Leadership election on PostgreSQL for tokio (work in progress).

pub mod pg;

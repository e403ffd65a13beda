//! Leadership election on PostgreSQL for blocking code (work in progress).

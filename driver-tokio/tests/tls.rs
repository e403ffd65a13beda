//! TLS against a throwaway PostgreSQL that accepts only `hostssl` connections (feature `rustls`).
#![cfg(feature = "rustls")]

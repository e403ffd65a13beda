//! Tests of the server kit's components against the real things they wrap: a standby made by
//! `pg_basebackup`, a real pgbouncer, a server that demands TLS, the TCP proxy in front of a
//! real server, network namespaces with iptables. Each component's file is named after it.

mod netns;
mod pgbouncer;
mod proxy;
mod standby;
mod tls;
mod wire;

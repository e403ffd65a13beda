//! `--metrics-listen ADDR`: the flag's metrics (`leadership_tokio::metrics`) served for
//! Prometheus over HTTP by `metrics-exporter-prometheus`, on the tool's one thread.
//!
//! The listener is bound before the tool connects, so a bad address or a port in use is a
//! configuration error at start (exit 78), never a half-working process. The flag records
//! under `--metrics-prefix` with the labels `name` (the flag) and `process` (this process),
//! which is what the rules of `deploy/prometheus/` read (`{__name__=~".+_leadership_flag_state"}`
//! by `name`).

use std::net::{SocketAddr, ToSocketAddrs};

use leadership_tokio::metrics::STATEMENT_SECONDS;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};
use tracing::{info, warn};

use crate::args::MetricsArgs;
use crate::exit::{Failure, CONFIG};

/// The statements' latency buckets, in seconds: a round trip on a LAN to a statement's
/// default timeout (1 s) and beyond, so `histogram_quantile` reads renew latency.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Why the metrics cannot be served; each names the option to fix.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("--metrics-listen {addr:?} is not an address to listen on ({reason}); give host:port, e.g. 127.0.0.1:9898 or [::]:9898")]
    Address { addr: String, reason: String },
    #[error("--metrics-listen {addr}: cannot listen there: {reason}")]
    Listen { addr: String, reason: String },
    #[error("--metrics-prefix {prefix:?} is not a metric name prefix: give letters, digits and '_', not starting with a digit")]
    Prefix { prefix: String },
    #[error("--metrics-listen: cannot install the metrics recorder: {0}")]
    Recorder(String),
}

impl From<MetricsError> for Failure {
    fn from(e: MetricsError) -> Failure {
        Failure::new(CONFIG, e.to_string())
    }
}

/// Reads `--metrics-listen`: `host:port`, the host a literal address or a name resolved once
/// (the first address it resolves to).
pub fn address(addr: &str) -> Result<SocketAddr, MetricsError> {
    let bad = |reason: String| MetricsError::Address {
        addr: addr.to_string(),
        reason,
    };
    if let Ok(socket) = addr.parse() {
        return Ok(socket);
    }
    if !addr.contains(':') {
        return Err(bad("no port".into()));
    }
    addr.to_socket_addrs()
        .map_err(|e| bad(e.to_string()))?
        .next()
        .ok_or_else(|| bad("resolves to no address".into()))
}

/// Checks `--metrics-prefix`: a Prometheus metric name's start (`[a-zA-Z_][a-zA-Z0-9_]*`).
pub fn prefix(prefix: &str) -> Result<&str, MetricsError> {
    let mut chars = prefix.chars();
    let first = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(prefix)
    } else {
        Err(MetricsError::Prefix {
            prefix: prefix.to_string(),
        })
    }
}

/// Starts serving, if `--metrics-listen` is given: binds the address, installs the recorder and
/// spawns the listener on the current runtime. The prefix the flag must record under, or `None`
/// (no metrics: the flag records nothing, as without a prefix).
pub fn serve(args: &MetricsArgs) -> Result<Option<String>, MetricsError> {
    let Some(listen) = &args.metrics_listen else {
        return Ok(None);
    };
    let prefix = prefix(&args.metrics_prefix)?.to_string();
    let addr = address(listen)?;
    let builder = PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            Matcher::Suffix(STATEMENT_SECONDS.to_string()),
            LATENCY_BUCKETS,
        )
        .map_err(|e| MetricsError::Recorder(e.to_string()))?;
    let (recorder, exporter) = builder.build().map_err(|e| match e {
        BuildError::FailedToCreateHTTPListener(reason) => MetricsError::Listen {
            addr: addr.to_string(),
            reason,
        },
        e => MetricsError::Recorder(e.to_string()),
    })?;
    ::metrics::set_global_recorder(recorder).map_err(|e| MetricsError::Recorder(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = exporter.await {
            warn!(error = ?e, "the metrics listener stopped");
        }
    });
    info!(%addr, prefix, "serving metrics");
    Ok(Some(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_read_as_host_and_port() {
        assert_eq!(
            address("127.0.0.1:9898").unwrap(),
            "127.0.0.1:9898".parse().unwrap()
        );
        assert_eq!(address("[::]:9898").unwrap(), "[::]:9898".parse().unwrap());
        assert_eq!(address("localhost:9898").unwrap().port(), 9898);
        for bad in ["9898", "127.0.0.1", "127.0.0.1:port", "", ":x"] {
            let e = address(bad).unwrap_err().to_string();
            assert!(e.starts_with("--metrics-listen "), "{bad}: {e}");
        }
    }

    #[test]
    fn prefixes_are_metric_names() {
        assert_eq!(prefix("leadership").unwrap(), "leadership");
        assert_eq!(prefix("_a1_b").unwrap(), "_a1_b");
        for bad in ["", "1a", "a-b", "a.b", "a b"] {
            let e = prefix(bad).unwrap_err().to_string();
            assert!(e.starts_with("--metrics-prefix "), "{bad}: {e}");
        }
    }
}

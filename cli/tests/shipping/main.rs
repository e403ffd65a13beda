//! What ships beside the code, checked in one test binary (one link in CI, not four): the
//! crates' publishing metadata, the completions and man page from the built binary, the
//! Prometheus rules (`deploy/prometheus/`), the Grafana dashboard (`deploy/grafana/`) and the
//! Kubernetes manifests (`deploy/kubernetes/`).

mod grafana;
mod kubernetes;
mod manual;
mod prometheus;
mod publishing;

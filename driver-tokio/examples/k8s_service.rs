//! A Kubernetes-style service: one shared flag handle for the worker, the HTTP probes and the
//! shutdown; SIGTERM closes it within the termination grace, so the next pod leads at once.
//!
//! ```sh
//! DATABASE_URL="host=localhost user=postgres" cargo run -p leadership-tokio --example k8s_service
//! curl -s 127.0.0.1:8080/healthz   # 200 while the server answers, 503 otherwise
//! curl -s 127.0.0.1:8080/leader    # who leads, from the last check
//! ```
//!
//! In the pod spec (`deploy/kubernetes/service.yaml`): `readinessProbe` on `/healthz` (a
//! follower is ready too, so a rolling update never waits for a new pod to lead),
//! `livenessProbe` on `/leader` (served from memory: a database outage restarts nothing),
//! `terminationGracePeriodSeconds: 30`; the close below is bounded by 20 s so the process exits
//! before the kubelet's SIGKILL. The process name defaults to the host name (the pod name), the
//! pid and a random suffix.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use leadership_tokio::Flag;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "host=localhost".into());
    let flag = Flag::builder("scheduler", "") // "": host name, pid and a random suffix
        .connect_str(&url)
        .interval(Duration::from_secs(10))
        .start(tokio_postgres::NoTls)
        .await?;

    // The probes share the handle (a clone is cheap).
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/leader", get(leader))
        .with_state(flag.clone());
    // In a pod, LISTEN=0.0.0.0:8080: the kubelet probes the pod's address.
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    // SIGTERM (the kubelet) or Ctrl-C: hand over within the grace period.
    let shutdown = flag.clone();
    tokio::spawn(async move {
        terminated().await;
        if let Err(e) = shutdown.close_within(Duration::from_secs(20)).await {
            eprintln!("handover incomplete, the next leader waits for the lease: {e}");
        }
    });

    // The leader-only work: started for each term, told to stop in time, awaited before the
    // row is released. Returns once the flag is closed.
    flag.lead(|guard| async move {
        let stop = guard.stop_token();
        while !stop.is_cancelled() {
            println!("scheduling with token {}", guard.token());
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    })
    .await?;
    Ok(())
}

/// 200 while the driver runs and the server answered within three intervals.
async fn healthz(State(flag): State<Flag>) -> (StatusCode, String) {
    let health = flag.health();
    let status = if health.is_healthy(Duration::from_secs(30)) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, format!("{health:?}\n"))
}

/// Who leads, from the last check (no statement of its own).
async fn leader(State(flag): State<Flag>) -> String {
    match flag.current_holder() {
        _ if flag.is_raised() => "this process\n".into(),
        Some(h) if !h.expired => format!("{}\n", h.name.unwrap_or_default()),
        _ => "nobody\n".into(),
    }
}

async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

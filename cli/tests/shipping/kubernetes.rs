//! `deploy/kubernetes/`: the manifests validate against the Kubernetes schemas
//! (`kubernetes-validate`, skipped when absent), and the numbers the README explains hold
//! together: the termination grace covers the command's stop, its leftovers' grace and the
//! release; the lease can give `--grace` (asked of the tool itself); the process name is the
//! pod's; no probe waits on leadership; the service's numbers are its example's.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The value of the first `key: value` line.
fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key}"))
        .trim()
}

fn seconds(text: &str, key: &str) -> Duration {
    Duration::from_secs(field(text, key).parse().unwrap())
}

/// The container's `args: [...]`, a flow sequence of quoted strings (JSON).
fn args(manifest: &str) -> Vec<String> {
    serde_json::from_str(field(manifest, "args")).expect("args as a one-line list")
}

fn option(args: &[String], name: &str) -> Option<String> {
    let at = args.iter().position(|a| a == name)?;
    Some(args[at + 1].clone())
}

fn duration(text: &str) -> Duration {
    humantime::parse_duration(text).unwrap()
}

#[test]
fn the_manifests_validate_against_the_kubernetes_schemas() {
    let tool =
        std::env::var("KUBERNETES_VALIDATE").unwrap_or_else(|_| "kubernetes-validate".into());
    if !Command::new(&tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        println!(
            "SKIPPED: {tool} not found (PyPI kubernetes-validate; ./test installs it, or set \
             KUBERNETES_VALIDATE)"
        );
        return;
    }
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    manifests.sort();
    assert!(manifests.len() >= 2, "{manifests:?}");
    let out = Command::new(&tool)
        .args(["--strict", "--quiet"])
        .args(&manifests)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn run_s_termination_grace_covers_the_stop_the_leftovers_and_the_release() {
    let manifest = read(&dir().join("run.yaml"));
    let args = args(&manifest);
    assert_eq!(args[0], "run");
    let interval = duration(&option(&args, "--interval").unwrap());
    let grace = duration(&option(&args, "--grace").expect("--grace sized with the pod"));
    let timeout = option(&args, "--timeout")
        .map(|t| duration(&t))
        .unwrap_or(Duration::from_secs(1).min(interval / 10));
    // SIGTERM from the kubelet: forwarded, the command stops (it must within --grace, as on a
    // lease at risk), its leftovers get --grace more, then one release statement.
    let termination = seconds(&manifest, "terminationGracePeriodSeconds");
    assert!(
        termination >= grace * 2 + timeout + Duration::from_secs(5),
        "terminationGracePeriodSeconds {termination:?} < 2 × --grace {grace:?} + --timeout \
         {timeout:?} + 5 s"
    );
    // A grace the lease cannot give is refused by the tool itself: these settings pass its
    // validation (and fail only to reach a server that is not there).
    let mut tool_args: Vec<String> = args
        .iter()
        .map(|a| a.replace("$(POD_NAME)", "pod-a"))
        .collect();
    let at = tool_args.iter().position(|a| a == "--").unwrap();
    tool_args.splice(
        at..at,
        [
            "--url",
            "postgres://u@127.0.0.1:1/db?sslmode=disable",
            "--connect-timeout",
            "1s",
        ]
        .map(String::from),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_leadership"))
        .args(&tool_args)
        .env_remove("LEADERSHIP_URL")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(69),
        "the manifest's settings: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn run_names_each_process_after_its_pod_and_never_waits_on_leadership_to_be_ready() {
    let manifest = read(&dir().join("run.yaml"));
    let args = args(&manifest);
    assert_eq!(option(&args, "--process").as_deref(), Some("$(POD_NAME)"));
    let pod_name = manifest.find("- name: POD_NAME").expect("POD_NAME");
    assert_eq!(field(&manifest[pod_name..], "fieldPath"), "metadata.name");
    assert!(
        !manifest.contains("readinessProbe:"),
        "a standby must be ready"
    );
    assert!(field(&manifest, "replicas").parse::<u32>().unwrap() >= 2);
    assert_eq!(field(&manifest, "maxUnavailable"), "0");
}

/// The tool serves its metrics on the port the container declares and the pod's annotations
/// name, on every address (a scraper reaches the pod's, not the loopback).
#[test]
fn run_serves_its_metrics_on_the_port_it_declares() {
    let manifest = read(&dir().join("run.yaml"));
    let listen = option(&args(&manifest), "--metrics-listen").expect("--metrics-listen");
    let (host, port) = listen.rsplit_once(':').unwrap();
    assert_eq!(host, "0.0.0.0", "the pod's address, not the loopback");
    let metrics = manifest
        .find("- name: metrics")
        .expect("a port named metrics");
    assert_eq!(field(&manifest[metrics..], "containerPort"), port);
    assert_eq!(
        field(&manifest, "prometheus.io/port"),
        format!("\"{port}\"")
    );
}

#[test]
fn the_service_s_numbers_are_its_example_s() {
    let manifest = read(&dir().join("service.yaml"));
    let example = read(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../driver-tokio/examples/k8s_service.rs"),
    );
    let secs_in = |text: &str, call: &str| -> u64 {
        let at = text
            .find(call)
            .unwrap_or_else(|| panic!("no {call} in the example"));
        let rest = &text[at + call.len()..];
        rest[..rest.find(')').unwrap()].parse().unwrap()
    };
    let close = Duration::from_secs(secs_in(&example, "close_within(Duration::from_secs("));
    let interval = Duration::from_secs(secs_in(&example, ".interval(Duration::from_secs("));
    let healthy = Duration::from_secs(secs_in(&example, "is_healthy(Duration::from_secs("));
    let termination = seconds(&manifest, "terminationGracePeriodSeconds");
    assert!(
        termination >= close + Duration::from_secs(5),
        "the close ({close:?}) must end before the kubelet's SIGKILL ({termination:?})"
    );
    assert!(
        healthy >= interval * 2,
        "a follower checks once an interval"
    );
    // Readiness on the database's answers (any role), liveness on the process alone.
    let ready = manifest.find("readinessProbe:").unwrap();
    assert_eq!(field(&manifest[ready..], "path"), "/healthz");
    let live = manifest.find("livenessProbe:").unwrap();
    assert_eq!(field(&manifest[live..], "path"), "/leader");
    // The probes reach the pod's address.
    assert!(example.contains("std::env::var(\"LISTEN\")"));
    let listen = manifest.find("- name: LISTEN").unwrap();
    assert_eq!(field(&manifest[listen..], "value"), "\"0.0.0.0:8080\"");
}

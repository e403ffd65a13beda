//! The workspace is ready to publish: what `cargo package --workspace` and crates.io need of
//! every publishable crate, checked from `cargo metadata` in well under a second. CI does not
//! run `cargo package --workspace` itself: it rebuilds every crate from its tarball (4 min 14 s
//! on two shared cores); `--no-verify` takes ~10 s but needs the crates.io index. To run it
//! again at an unchanged version, use a fresh `--target-dir` and delete the siblings cargo
//! unpacked the first time (`~/.cargo/registry/src/-<hash>/leadership-*`): cargo takes a
//! registry crate of the same version as unchanged, and would verify the new tarballs against
//! the old siblings' sources and builds.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ is inside the workspace")
        .to_path_buf()
}

/// `cargo metadata` of the workspace's own packages.
fn packages() -> Vec<Value> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .arg("--manifest-path")
        .arg(workspace().join("Cargo.toml"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: Value = serde_json::from_slice(&out.stdout).unwrap();
    metadata["packages"].as_array().unwrap().clone()
}

/// `publish = false` is an empty list of registries.
fn publishable(package: &Value) -> bool {
    package["publish"].as_array().is_none_or(|r| !r.is_empty())
}

fn dir(package: &Value) -> PathBuf {
    Path::new(package["manifest_path"].as_str().unwrap())
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn the_published_crates_are_the_library_and_the_tool() {
    let mut names: Vec<&str> = Vec::new();
    let packages = packages();
    for p in &packages {
        if publishable(p) {
            names.push(p["name"].as_str().unwrap());
        }
    }
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "leadership-blocking",
            "leadership-cli",
            "leadership-core",
            "leadership-tokio"
        ],
        "a new crate must say `publish = false` or be published with the others"
    );
}

#[test]
fn every_publishable_crate_has_complete_metadata_a_readme_and_a_license_file() {
    for p in packages().iter().filter(|p| publishable(p)) {
        let name = p["name"].as_str().unwrap();
        for field in ["description", "license", "repository", "rust_version"] {
            assert!(
                p[field].as_str().is_some_and(|v| !v.is_empty()),
                "{name}: no {field}"
            );
        }
        assert_eq!(p["license"], "Apache-2.0", "{name}: the LICENSE file's");
        let keywords = p["keywords"].as_array().unwrap();
        assert!(
            (1..=5).contains(&keywords.len()),
            "{name}: crates.io takes 1 to 5 keywords, not {keywords:?}"
        );
        for k in keywords {
            let k = k.as_str().unwrap();
            assert!(
                k.len() <= 20
                    && k.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "{name}: crates.io refuses the keyword {k:?}"
            );
        }
        let categories = p["categories"].as_array().unwrap();
        assert!(
            (1..=5).contains(&categories.len()),
            "{name}: {categories:?}"
        );
        let readme = p["readme"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no readme"));
        let readme = dir(p).join(readme);
        assert!(
            readme.starts_with(dir(p)) && readme.is_file(),
            "{name}: a README of its own, not {}",
            readme.display()
        );
        let license = dir(p).join("LICENSE");
        let text = std::fs::read_to_string(&license)
            .unwrap_or_else(|e| panic!("{name}: {}: {e}", license.display()));
        assert!(text.contains("Apache License") && text.contains("Version 2.0"));
        // docs.rs builds default features only unless told: every feature must be documented.
        let features: Vec<&String> = p["features"]
            .as_object()
            .unwrap()
            .keys()
            .filter(|f| *f != "default")
            .collect();
        if !features.is_empty() {
            let docs_rs = &p["metadata"]["docs"]["rs"];
            let listed: Vec<&str> = docs_rs["features"]
                .as_array()
                .map(|f| f.iter().map(|f| f.as_str().unwrap()).collect())
                .unwrap_or_default();
            for f in features {
                assert!(
                    docs_rs["all-features"] == true || listed.contains(&f.as_str()),
                    "{name}: feature {f} is missing from [package.metadata.docs.rs]"
                );
            }
        }
    }
}

#[test]
fn path_dependencies_between_published_crates_carry_their_version() {
    let packages = packages();
    let version_of = |name: &str| {
        packages
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| (p["version"].as_str().unwrap(), publishable(p)))
    };
    for p in packages.iter().filter(|p| publishable(p)) {
        let name = p["name"].as_str().unwrap();
        for d in p["dependencies"].as_array().unwrap() {
            if d["path"].is_null() || d["kind"] == "dev" {
                // Dev-dependencies without a version are left out of the package by cargo.
                continue;
            }
            let dep = d["name"].as_str().unwrap();
            let (version, dep_publishable) = version_of(dep).unwrap();
            assert!(dep_publishable, "{name} depends on {dep}, never published");
            assert_eq!(
                d["req"],
                format!("^{version}"),
                "{name} -> {dep}: a path dependency needs `version = \"{version}\"` too, or \
                 `cargo package` cannot build it"
            );
        }
    }
}

#[test]
fn the_changelog_names_every_version_and_the_api_policy() {
    let changelog = std::fs::read_to_string(workspace().join("CHANGELOG.md")).unwrap();
    assert!(changelog.contains("## Public API and versions"));
    assert!(changelog.contains("semver-checks"));
    for p in packages().iter().filter(|p| publishable(p)) {
        let version = p["version"].as_str().unwrap();
        assert!(
            changelog.contains(&format!("## {version}")),
            "CHANGELOG.md has no section for {} {version}",
            p["name"]
        );
    }
}

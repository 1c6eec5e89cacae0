//! Stamps what the programs are built from, for `lameduck_build_info` and `lameduck version`:
//! - `LAMEDUCK_VERSION`, the release version: a set `LAMEDUCK_VERSION` (the image builds pass the
//!   chart's `appVersion`), which must be a semantic version (`0.2.0`, `0.2.0-rc.1`), else the
//!   workspace's version. The operator compares it with the installed CRD's to decide an upgrade,
//!   so a version it cannot compare fails the build here rather than the upgrade later.
//! - `LAMEDUCK_REVISION`, the git revision. A set `LAMEDUCK_REVISION` wins (a build from a source
//!   archive can pass it); outside a git checkout the revision is `unknown`.

use std::{path::PathBuf, process::Command};

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() {
    println!("cargo:rerun-if-env-changed=LAMEDUCK_VERSION");
    let version = match std::env::var("LAMEDUCK_VERSION") {
        Ok(version) if !version.is_empty() => {
            if let Err(err) = semver::Version::parse(&version) {
                eprintln!(
                    "LAMEDUCK_VERSION={version:?} is not a semantic version (like 0.2.0 or 0.2.0-rc.1, no \
                     leading v): {err}"
                );
                std::process::exit(1);
            }
            version
        }
        _ => std::env::var("CARGO_PKG_VERSION").unwrap_or_default(),
    };
    println!("cargo:rustc-env=LAMEDUCK_VERSION={version}");

    println!("cargo:rerun-if-env-changed=LAMEDUCK_REVISION");
    let revision = std::env::var("LAMEDUCK_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=LAMEDUCK_REVISION={revision}");
    // Built again when HEAD moves: HEAD itself, the branch it names, and the packed refs. Only
    // files that exist are named, since cargo treats a missing one as changed on every build.
    if let Some(dir) = git(&["rev-parse", "--git-dir"]).map(PathBuf::from) {
        let mut watched = vec![dir.join("HEAD"), dir.join("packed-refs")];
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watched.push(dir.join(branch));
        }
        for path in watched.into_iter().filter(|p| p.exists()) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}

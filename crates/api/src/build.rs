//! What every lameduck program was built from, for `lameduck_build_info{version,revision}` and
//! `lameduck version`.

/// The release version: `LAMEDUCK_VERSION` at build time (the image builds pass the chart's
/// `appVersion`; `build.rs` checks it is a semantic version), else [`PACKAGE_VERSION`]. The
/// operator stamps the CRD it applies with it and compares it with the installed CRD's.
pub const VERSION: &str = env!("LAMEDUCK_VERSION");
/// The workspace's version (Cargo.toml), whatever the build's environment: the version the
/// committed CRD files (`crds/`, the chart's `crds/`) carry, so they do not change with it.
pub const PACKAGE_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git revision (12 hex digits), or `unknown` for a build outside a checkout.
pub const REVISION: &str = env!("LAMEDUCK_REVISION");

/// The build-info metric every program that serves metrics exports, set to 1, in the `lameduck`
/// namespace: `lameduck_build_info{version,revision}`.
pub const BUILD_INFO_METRIC: &str = "build_info";
/// The namespace of metrics named alike on every lameduck program.
pub const METRICS_NAMESPACE: &str = "lameduck";
/// Its help text.
pub const BUILD_INFO_HELP: &str = "The version and git revision this program was built from; always 1.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_revision_is_a_short_hash_or_unknown() {
        assert!(
            REVISION == "unknown"
                || (REVISION.len() == 12 && REVISION.bytes().all(|b| b.is_ascii_hexdigit())),
            "{REVISION}"
        );
    }

    #[test]
    fn the_versions_are_semantic_versions() {
        semver::Version::parse(VERSION).unwrap();
        semver::Version::parse(PACKAGE_VERSION).unwrap();
    }
}

//! `lameduck`: the user's command line.
#![forbid(unsafe_code)]

mod check;
mod cluster;
mod crds;
mod inject;
mod live;
mod manifest;
mod version;
mod yaml;

use std::{
    io::{self, Read, Write},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use lameduck_api::GoDuration;

/// Exit code when the input cannot be read or parsed (clap uses it for usage errors too).
const EXIT_BAD_INPUT: u8 = 2;
/// Exit code when a check finds an error (or, with `--strict`, a warning).
const EXIT_FINDINGS: u8 = 1;

/// lameduck makes meshed Kubernetes pods shut down gracefully.
#[derive(Debug, Parser)]
#[command(name = "lameduck", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The name kubectl finds a plugin by: installed as `kubectl-lameduck`, this CLI runs as
/// `kubectl lameduck ...`.
const PLUGIN_BINARY: &str = "kubectl-lameduck";

/// How the user typed this command, for usage and help: `kubectl lameduck` when run as a plugin.
fn invoked_as(argv0: Option<&std::ffi::OsStr>) -> &'static str {
    let file = argv0.map(std::path::Path::new).and_then(std::path::Path::file_name);
    if file.is_some_and(|name| name == PLUGIN_BINARY) { "kubectl lameduck" } else { "lameduck" }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print lameduck's CustomResourceDefinitions as YAML (`lameduck crds | kubectl apply -f -`).
    Crds {
        /// Write one file per CRD into this directory instead of printing them.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Check manifests for shutdown-timing mistakes:
    /// app preStop < proxy wait-before-exit < terminationGracePeriodSeconds;
    /// or, with --cluster, a live cluster (like `linkerd check`).
    ///
    /// Reads Pods, Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs and Lists.
    /// ShutdownPolicy objects in the input apply to the workloads they select.
    /// Exits 1 when a rule is broken, 2 when the input cannot be read.
    ///
    /// With --cluster: the API server and its nodes, the CRD, the operator and its leader, the
    /// webhook (a dry-run pod must come back mutated), the operator's permissions, the timing of
    /// every workload the operator watches, and the pods stuck now. Exits 1 on a failure.
    Check(CheckArgs),
    /// Set up graceful shutdown in manifests and print them (like `linkerd inject`).
    ///
    /// Adds a lameduck-proxy to each pod template of Pods, Deployments, StatefulSets, DaemonSets,
    /// ReplicaSets, Jobs, CronJobs and Lists, or adjusts the linkerd-proxy it already has (or the
    /// Linkerd annotations when Linkerd injects it at admission), with the drain settings below.
    /// Other objects, and templates already set up this way, are printed as they were written.
    /// Exits 2, printing nothing, when any input cannot be read.
    Inject(InjectArgs),
    /// Print this CLI's version and, with --cluster, the installed operator's and CRD's.
    Version(VersionArgs),
}

#[derive(Debug, clap::Args)]
struct VersionArgs {
    /// Also read the operator's and the CRD's versions from the cluster (kubeconfig as kubectl).
    #[arg(long)]
    cluster: bool,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = VersionOutput::Text)]
    output: VersionOutput,
    #[command(flatten)]
    access: cluster::ClusterArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum VersionOutput {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
// Files or the cluster: one of the two, never both.
#[command(group(clap::ArgGroup::new("input").required(true).args(["files", "cluster"])))]
struct CheckArgs {
    /// Manifest file to check, `-` for standard input. Repeat for several files.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE",
        env = "LAMEDUCK_CHECK_FILES",
        value_delimiter = ','
    )]
    files: Vec<PathBuf>,
    /// Check the live cluster instead of files (kubeconfig and context as kubectl).
    #[arg(long)]
    cluster: bool,
    /// With --cluster: only the operator installed in this namespace (default: every one found).
    #[arg(long, value_name = "NS")]
    operator_namespace: Option<String>,
    #[command(flatten)]
    access: cluster::ClusterArgs,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text, env = "LAMEDUCK_CHECK_OUTPUT")]
    output: Output,
    /// Fail (exit 1) on warnings too.
    #[arg(long, env = "LAMEDUCK_CHECK_STRICT")]
    strict: bool,
}

#[derive(Debug, clap::Args)]
struct InjectArgs {
    /// Manifest file to inject, `-` for standard input. Repeat for several files.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE",
        required = true,
        env = "LAMEDUCK_INJECT_FILES",
        value_delimiter = ','
    )]
    files: Vec<PathBuf>,
    /// Seconds the proxy waits in preStop before it starts draining (a classic sidecar only:
    /// the kubelet stops a native sidecar after the app anyway).
    // Negative numbers are taken as the value, so `-1` is refused naming this flag.
    #[arg(
        long,
        value_name = "SECONDS",
        env = "LAMEDUCK_INJECT_WAIT_BEFORE_EXIT_SECONDS",
        allow_negative_numbers = true
    )]
    wait_before_exit_seconds: Option<u32>,
    /// How long the proxy drains before it closes what is left, e.g. 30s or 2m.
    #[arg(long, value_name = "DURATION", env = "LAMEDUCK_INJECT_SHUTDOWN_GRACE_PERIOD")]
    shutdown_grace_period: Option<GoDuration>,
    /// Turn the proxy's /shutdown endpoint on, or off with `=false`. Default: the proxy's own
    /// (off), or on with --await.
    #[arg(
        long,
        value_name = "BOOL",
        env = "LAMEDUCK_INJECT_ENABLE_SHUTDOWN_ENDPOINT",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    enable_shutdown_endpoint: Option<bool>,
    /// Run the proxy as a native sidecar (an init container with restartPolicy: Always).
    #[arg(long, env = "LAMEDUCK_INJECT_NATIVE_SIDECAR")]
    native_sidecar: bool,
    /// Image of an added lameduck-proxy container.
    #[arg(
        long,
        value_name = "IMAGE",
        env = "LAMEDUCK_INJECT_PROXY_IMAGE",
        default_value = lameduck_api::names::images::PROXY,
        value_parser = image_reference
    )]
    proxy_image: String,
    /// Wrap each app container's command with `lameduck-await -S --`: the app starts once the
    /// proxy is ready, and the proxy stops when the app exits (containers without a command are
    /// left alone).
    #[arg(long = "await", env = "LAMEDUCK_INJECT_AWAIT")]
    await_app: bool,
}

impl InjectArgs {
    fn options(&self) -> inject::Options {
        inject::Options {
            wait_before_exit: self.wait_before_exit_seconds.map(|s| GoDuration::from_secs(u64::from(s))),
            shutdown_grace_period: self.shutdown_grace_period,
            enable_shutdown_endpoint: self.enable_shutdown_endpoint,
            native_sidecar: self.native_sidecar,
            proxy_image: self.proxy_image.clone(),
            await_app: self.await_app,
        }
    }
}

/// Refuses what cannot be an image reference, so the mistake is reported with the flag.
fn image_reference(value: &str) -> Result<String, String> {
    if value.is_empty() || value.contains(char::is_whitespace) {
        return Err("an image reference is not empty and has no spaces".to_owned());
    }
    Ok(value.to_owned())
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Output {
    /// One block per workload (with --cluster, per section), for people.
    Text,
    /// One JSON object, for scripts.
    Json,
}

fn read_input(path: &PathBuf) -> anyhow::Result<(String, String)> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        io::stdin().read_to_string(&mut text).context("cannot read standard input")?;
        return Ok(("-".to_owned(), text));
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok((path.display().to_string(), text))
}

fn run_check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    if args.cluster {
        return live::run(args);
    }
    if args.operator_namespace.is_some() {
        eprintln!("error: --operator-namespace needs --cluster");
        return Ok(ExitCode::from(EXIT_BAD_INPUT));
    }
    let mut all = manifest::Manifests::default();
    for path in &args.files {
        let (name, text) = match read_input(path) {
            Ok(input) => input,
            Err(err) => {
                eprintln!("error: {err:#}");
                return Ok(ExitCode::from(EXIT_BAD_INPUT));
            }
        };
        match manifest::parse(&name, &text) {
            Ok(parsed) => {
                all.workloads.extend(parsed.workloads);
                all.policies.extend(parsed.policies);
                all.skipped.extend(parsed.skipped);
            }
            Err(err) => {
                eprintln!("error: {err}");
                return Ok(ExitCode::from(EXIT_BAD_INPUT));
            }
        }
    }
    let report = check::check(&all);
    let mut stdout = io::stdout().lock();
    match args.output {
        Output::Text => check::render_text(&report, &mut stdout)?,
        Output::Json => {
            serde_json::to_writer_pretty(&mut stdout, &report)?;
            writeln!(stdout)?;
        }
    }
    Ok(if report.failed(args.strict) { ExitCode::from(EXIT_FINDINGS) } else { ExitCode::SUCCESS })
}

fn run_inject(args: &InjectArgs) -> anyhow::Result<ExitCode> {
    // The same rule the ShutdownPolicy schema has for these two settings.
    if let (Some(wait), Some(grace)) = (args.wait_before_exit_seconds, args.shutdown_grace_period)
        && GoDuration::from_secs(u64::from(wait)) >= grace
    {
        eprintln!(
            "error: --wait-before-exit-seconds ({wait}s) must be shorter than --shutdown-grace-period ({grace})"
        );
        return Ok(ExitCode::from(EXIT_BAD_INPUT));
    }
    let mut inputs = Vec::with_capacity(args.files.len());
    for path in &args.files {
        match read_input(path) {
            Ok(input) => inputs.push(input),
            Err(err) => {
                eprintln!("error: {err:#}");
                return Ok(ExitCode::from(EXIT_BAD_INPUT));
            }
        }
    }
    let injected = match inject::inject(&inputs, &args.options()) {
        Ok(injected) => injected,
        Err(err) => {
            eprintln!("error: {err}");
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    for warning in &injected.warnings {
        eprintln!("warning: {warning}");
    }
    // On stderr, like `linkerd inject`'s summary, so stdout stays the manifests alone.
    eprintln!("{} of {} documents changed", injected.changed, injected.documents);
    io::stdout().lock().write_all(injected.output.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

fn run_version(args: &VersionArgs) -> anyhow::Result<ExitCode> {
    let cluster = if args.cluster {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        Some(runtime.block_on(async { version::installed(args.access.client().await?).await })?)
    } else {
        None
    };
    let versions = version::Versions { client: version::Build::this(), cluster };
    let text = match args.output {
        VersionOutput::Text => version::render_text(&versions),
        VersionOutput::Json => format!("{}\n", serde_json::to_string_pretty(&versions)?),
    };
    io::stdout().lock().write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

fn main() -> anyhow::Result<ExitCode> {
    let argv0 = std::env::args_os().next();
    let matches = Cli::command().bin_name(invoked_as(argv0.as_deref())).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    match cli.command {
        Command::Crds { dir: None } => {
            io::stdout().lock().write_all(crds::all().as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Crds { dir: Some(dir) } => {
            for path in crds::write_dir(&dir).with_context(|| format!("cannot write to {}", dir.display()))? {
                eprintln!("wrote {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(args) => run_check(&args),
        Command::Inject(args) => run_inject(&args),
        Command::Version(args) => run_version(&args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// The krew manifest template installs the binary kubectl looks for, on every platform.
    #[test]
    fn the_krew_template_installs_the_plugin_binary() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/krew/lameduck.yaml");
        let template = std::fs::read_to_string(&path).unwrap();
        // Rendered as krew-release-bot would, with a placeholder archive.
        let tagged = template.replace("{{ .TagName }}", "v0.0.0");
        let mut rendered = Vec::new();
        for line in tagged.lines() {
            if line.trim_start().starts_with("{{addURIAndSha") {
                let indent = &line[..line.len() - line.trim_start().len()];
                rendered.push(format!("{indent}uri: https://example.invalid/a.tar.gz"));
                rendered.push(format!("{indent}sha256: {}", "0".repeat(64)));
            } else {
                rendered.push(line.to_owned());
            }
        }
        let rendered = rendered.join("\n");
        let manifest: serde_json::Value =
            serde_yaml_ng::from_str(&rendered).unwrap_or_else(|e| panic!("{e}\n{rendered}"));
        assert_eq!(manifest["metadata"]["name"], "lameduck");
        let platforms = manifest["spec"]["platforms"].as_array().expect("platforms");
        assert!(!platforms.is_empty());
        for platform in platforms {
            assert_eq!(platform["bin"], PLUGIN_BINARY, "{platform}");
            assert!(platform["uri"].is_string() && platform["sha256"].is_string(), "{platform}");
        }
    }

    #[test]
    fn installed_as_kubectl_lameduck_it_speaks_as_the_plugin() {
        use std::ffi::OsStr;
        assert_eq!(invoked_as(Some(OsStr::new("/usr/local/bin/kubectl-lameduck"))), "kubectl lameduck");
        assert_eq!(invoked_as(Some(OsStr::new("kubectl-lameduck"))), "kubectl lameduck");
        assert_eq!(invoked_as(Some(OsStr::new("/usr/bin/lameduck"))), "lameduck");
        assert_eq!(invoked_as(None), "lameduck");
        let mut cmd = Cli::command().bin_name(invoked_as(Some(OsStr::new("kubectl-lameduck"))));
        let help = cmd.render_help().to_string();
        assert!(help.contains("Usage: kubectl lameduck <COMMAND>"), "{help}");
    }
}

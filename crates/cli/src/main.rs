//! `lameduck`: the user's command line.
#![forbid(unsafe_code)]

mod check;
mod crds;
mod manifest;

use std::{
    io::{self, Read, Write},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

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

#[derive(Debug, Subcommand)]
enum Command {
    /// Print lameduck's CustomResourceDefinitions as YAML (`lameduck crds | kubectl apply -f -`).
    Crds {
        /// Write one file per CRD into this directory instead of printing them.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Check manifests for shutdown-timing mistakes:
    /// app preStop < proxy wait-before-exit < terminationGracePeriodSeconds.
    ///
    /// Reads Pods, Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs and Lists.
    /// ShutdownPolicy objects in the input apply to the workloads they select.
    /// Exits 1 when a rule is broken, 2 when the input cannot be read.
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// Manifest file to check, `-` for standard input. Repeat for several files.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE",
        required = true,
        env = "LAMEDUCK_CHECK_FILES",
        value_delimiter = ','
    )]
    files: Vec<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text, env = "LAMEDUCK_CHECK_OUTPUT")]
    output: Output,
    /// Fail (exit 1) on warnings too.
    #[arg(long, env = "LAMEDUCK_CHECK_STRICT")]
    strict: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Output {
    /// One block per workload, for people.
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

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}

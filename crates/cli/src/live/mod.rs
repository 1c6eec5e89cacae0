//! `lameduck check --cluster`: checks a live cluster the way `linkerd check` does, section by
//! section: the Kubernetes API and its nodes, the CRD, the operator and its leader, the webhook
//! (down to a dry-run pod it must answer), the operator's permissions, every workload's shutdown
//! timing (the rules of `lameduck check -f`), and the pods stuck now.
//!
//! `fetch` is the only part with a client: it fills `facts`; `plan` decides what it must ask
//! once the operator's Deployment is read; `checks` judges the facts; `render` prints.

mod checks;
mod facts;
mod fetch;
mod plan;
mod render;

use std::{io, process::ExitCode};

use crate::{CheckArgs, EXIT_FINDINGS, Output};

/// Runs every check against the cluster `args` name and prints the report; exits 1 on a failure
/// (or, with `--strict`, a warning).
pub(crate) fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let facts = runtime.block_on(fetch::facts(&args.access, args.operator_namespace.as_deref()));
    let report = checks::Report::new(checks::sections(&facts), args.strict);
    let mut stdout = io::stdout().lock();
    match args.output {
        Output::Text => render::text(&report, &mut stdout)?,
        Output::Json => render::json(&report, &mut stdout)?,
    }
    Ok(if report.success { ExitCode::SUCCESS } else { ExitCode::from(EXIT_FINDINGS) })
}

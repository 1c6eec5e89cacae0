//! `lameduck check`: the timing rules of `lameduck-api` over every workload in some manifests.

use std::io::{self, Write};

use kube::ResourceExt;
use lameduck_api::{
    selection,
    shape::PodShape,
    timing::{Finding, Severity, Timeline},
};
use serde::Serialize;

use crate::manifest::{Manifests, Origin};

/// The result of checking one workload.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Entry {
    #[serde(flatten)]
    pub(crate) origin: Origin,
    pub(crate) kind: String,
    pub(crate) name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) namespace: Option<String>,
    /// The `ShutdownPolicy` from the input that applies, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) policy: Option<String>,
    pub(crate) timeline: Timeline,
    pub(crate) findings: Vec<Finding>,
}

/// The result of a whole run.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Report {
    pub(crate) workloads: Vec<Entry>,
    /// Problems with the input's policies (a younger policy that loses, a bad selector).
    pub(crate) notes: Vec<String>,
    /// Objects with no pod template, as `Kind/name`.
    pub(crate) skipped: Vec<String>,
    pub(crate) errors: usize,
    pub(crate) warnings: usize,
}

impl Report {
    /// Whether the run should fail: any error, or with `strict` any warning.
    pub(crate) fn failed(&self, strict: bool) -> bool {
        self.errors > 0 || (strict && self.warnings > 0)
    }
}

/// Checks every workload; policies found in the same input apply to the workloads they select.
pub(crate) fn check(manifests: &Manifests) -> Report {
    let mut report = Report::default();
    for workload in &manifests.workloads {
        let labels = workload.labels();
        let chosen = selection::select(&manifests.policies, workload.namespace.as_deref(), &labels);
        for (policy, reason) in &chosen.invalid {
            let note = format!("ShutdownPolicy {}: {reason}", policy.name_any());
            if !report.notes.contains(&note) {
                report.notes.push(note);
            }
        }
        if let Some(winner) = chosen.winner {
            for loser in &chosen.losers {
                report.notes.push(format!(
                    "{} {}: ShutdownPolicy {} also selects it; the oldest, {}, applies",
                    workload.kind,
                    workload.name,
                    loser.name_any(),
                    winner.name_any()
                ));
            }
        }
        let annotations = workload.annotations();
        let spec = workload.template.spec.as_ref().expect("manifest keeps only templates with a spec");
        let shape = PodShape {
            runs_to_completion: workload.runs_to_completion,
            ..PodShape::new(spec, Some(&annotations), false)
        };
        let timeline = Timeline::of(&shape, chosen.winner.map(|p| &p.spec));
        let findings = timeline.findings();
        for finding in &findings {
            match finding.severity {
                Severity::Error => report.errors += 1,
                Severity::Warning => report.warnings += 1,
            }
        }
        report.workloads.push(Entry {
            origin: workload.origin.clone(),
            kind: workload.kind.clone(),
            name: workload.name.clone(),
            namespace: workload.namespace.clone(),
            policy: chosen.winner.map(ResourceExt::name_any),
            timeline,
            findings,
        });
    }
    report.skipped = manifests.skipped.iter().map(|(what, _)| what.clone()).collect();
    report
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The report for people.
pub(crate) fn render_text(report: &Report, out: &mut impl Write) -> io::Result<()> {
    for entry in &report.workloads {
        let namespace = entry.namespace.as_deref().map(|ns| format!(" in {ns}")).unwrap_or_default();
        let policy = entry.policy.as_deref().map(|p| format!(", ShutdownPolicy {p}")).unwrap_or_default();
        writeln!(out, "{} {}{namespace} ({}{policy})", entry.kind, entry.name, entry.origin)?;
        writeln!(out, "  timeline: {}", entry.timeline.summary())?;
        if entry.findings.is_empty() {
            writeln!(out, "  ok")?;
        }
        for finding in &entry.findings {
            let severity = match finding.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            writeln!(out, "  {severity}[{}]: {}", finding.rule, finding.message)?;
        }
    }
    for note in &report.notes {
        writeln!(out, "note: {note}")?;
    }
    if !report.skipped.is_empty() {
        writeln!(out, "skipped (no pod template): {}", report.skipped.join(", "))?;
    }
    writeln!(
        out,
        "{} checked: {}, {}",
        plural(report.workloads.len(), "workload", "workloads"),
        plural(report.errors, "error", "errors"),
        plural(report.warnings, "warning", "warnings"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest;
    use lameduck_api::timing::Rule;

    fn run(input: &str) -> Report {
        check(&manifest::parse("test.yaml", input).unwrap())
    }

    const JOB: &str = "\
apiVersion: batch/v1
kind: Job
metadata: {name: migrate, namespace: batch}
spec:
  template:
    metadata: {labels: {app: migrate}}
    spec:
      restartPolicy: Never
      containers: [{name: main}, {name: linkerd-proxy}]
";

    #[test]
    fn policy_in_the_input_applies_to_what_it_selects() {
        let without = run(JOB);
        assert_eq!(without.workloads[0].findings[0].rule, Rule::JobNeverCompletes);
        assert_eq!((without.errors, without.warnings), (0, 1));
        assert!(!without.failed(false) && without.failed(true));

        let policy = "---\napiVersion: lameduck.io/v1alpha1\nkind: ShutdownPolicy\nmetadata: {name: jobs, namespace: batch}\nspec: {selector: {matchLabels: {app: migrate}}}\n";
        let with = run(&format!("{JOB}{policy}"));
        assert_eq!(with.workloads[0].policy.as_deref(), Some("jobs"));
        assert!(with.workloads[0].findings.is_empty());

        let elsewhere = policy.replace("namespace: batch", "namespace: other");
        assert_eq!(run(&format!("{JOB}{elsewhere}")).workloads[0].policy, None);
    }

    #[test]
    fn conflicting_policies_are_noted_and_the_first_by_name_wins_without_timestamps() {
        let policies = "---\nkind: ShutdownPolicy\napiVersion: lameduck.io/v1alpha1\nmetadata: {name: b}\nspec: {}\n---\nkind: ShutdownPolicy\napiVersion: lameduck.io/v1alpha1\nmetadata: {name: a}\nspec: {}\n";
        let report = run(&format!("{JOB}{policies}"));
        assert_eq!(report.workloads[0].policy.as_deref(), Some("a"));
        assert_eq!(report.notes, ["Job migrate: ShutdownPolicy b also selects it; the oldest, a, applies"]);
    }

    #[test]
    fn text_report_names_workload_findings_and_totals() {
        let mut out = Vec::new();
        render_text(&run(JOB), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("Job migrate in batch (test.yaml: document 1 (line 1))\n  timeline: "),
            "{text}"
        );
        assert!(text.contains("  warning[job-never-completes]: proxy \"linkerd-proxy\""), "{text}");
        assert!(text.ends_with("1 workload checked: 0 errors, 1 warning\n"), "{text}");
    }
}

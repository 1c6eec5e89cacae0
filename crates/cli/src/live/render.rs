//! How `lameduck check --cluster` prints its report: sections with a mark per check, like
//! `linkerd check`, or one JSON object.

use std::io::{self, Write};

use super::checks::{Outcome, Report};

/// The marks `linkerd check` uses.
const PASS: &str = "√";
const WARN: &str = "‼";
const FAIL: &str = "×";

fn mark(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Pass => PASS,
        Outcome::Warn => WARN,
        Outcome::Fail => FAIL,
    }
}

/// The report for people: a header per section, a line per check, what is wrong and how to fix
/// it under each warning and failure, and a summary line.
pub(crate) fn text(report: &Report, out: &mut impl Write) -> io::Result<()> {
    for section in &report.sections {
        writeln!(out, "{}", section.name)?;
        writeln!(out, "{}", "-".repeat(section.name.chars().count()))?;
        for check in &section.checks {
            let mark = mark(check.result);
            if check.result == Outcome::Pass {
                match check.message.as_str() {
                    "" => writeln!(out, "{mark} {}", check.description)?,
                    message => writeln!(out, "{mark} {}: {message}", check.description)?,
                }
                continue;
            }
            writeln!(out, "{mark} {}", check.description)?;
            for line in check.message.lines() {
                writeln!(out, "    {line}")?;
            }
            if let Some(hint) = &check.hint {
                writeln!(out, "    see: {hint}")?;
            }
        }
        writeln!(out)?;
    }
    let (passed, warned, failed) =
        (report.count(Outcome::Pass), report.count(Outcome::Warn), report.count(Outcome::Fail));
    let worst = if failed > 0 {
        FAIL
    } else if warned > 0 {
        WARN
    } else {
        PASS
    };
    let strict = if !report.success && failed == 0 { "; --strict: warnings fail" } else { "" };
    writeln!(
        out,
        "Status check results are {worst} ({passed} passed, {warned} {}, {failed} failed{strict})",
        if warned == 1 { "warning" } else { "warnings" }
    )
}

/// The report as one JSON object: `{"sections": [...], "success": bool}`.
pub(crate) fn json(report: &Report, out: &mut impl Write) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, report)?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::checks::{Check, Section};

    fn report(strict: bool) -> Report {
        Report::new(
            vec![
                Section {
                    name: "Operator".into(),
                    checks: vec![
                        Check {
                            description: "the operator's replicas are ready".into(),
                            result: Outcome::Pass,
                            message: "2/2 ready".into(),
                            hint: None,
                        },
                        Check {
                            description: "a replica leads".into(),
                            result: Outcome::Warn,
                            message: "first line\nsecond line".into(),
                            hint: Some("do this".into()),
                        },
                    ],
                },
                Section {
                    name: "Stuck pods".into(),
                    checks: vec![Check {
                        description: "none".into(),
                        result: Outcome::Pass,
                        message: String::new(),
                        hint: None,
                    }],
                },
            ],
            strict,
        )
    }

    #[test]
    fn text_has_headers_marks_messages_hints_and_a_summary() {
        let mut out = Vec::new();
        text(&report(false), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Operator\n--------\n\
             √ the operator's replicas are ready: 2/2 ready\n\
             ‼ a replica leads\n    first line\n    second line\n    see: do this\n\n\
             Stuck pods\n----------\n√ none\n\n\
             Status check results are ‼ (2 passed, 1 warning, 0 failed)\n"
        );
        let mut strict = Vec::new();
        text(&report(true), &mut strict).unwrap();
        assert!(
            String::from_utf8(strict)
                .unwrap()
                .ends_with("(2 passed, 1 warning, 0 failed; --strict: warnings fail)\n")
        );
    }

    #[test]
    fn json_has_sections_checks_and_success() {
        let mut out = Vec::new();
        json(&report(false), &mut out).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["success"], true);
        assert_eq!(value["sections"][0]["name"], "Operator");
        assert_eq!(
            value["sections"][0]["checks"][1],
            serde_json::json!({"description": "a replica leads", "result": "warn", "message": "first line\nsecond line", "hint": "do this"})
        );
        assert_eq!(value["sections"][0]["checks"][0]["hint"], serde_json::Value::Null);
        assert!(!report(true).success);
    }
}

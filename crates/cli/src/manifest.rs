//! Reading Kubernetes manifests: multi-document YAML (or JSON) into workloads with pod templates.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet},
    batch::v1::{CronJob, Job},
    core::v1::{Pod, PodTemplateSpec},
};
use lameduck_api::ShutdownPolicy;
use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

/// Where something came from in the input, for messages: `document 3 (line 40)`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Origin {
    /// The file it was read from, `-` for standard input.
    pub(crate) source: String,
    /// 1-based document index in the stream.
    pub(crate) document: usize,
    /// 1-based line of the document's first content (past `---`, comments and blank lines).
    pub(crate) line: usize,
    /// 1-based index in a `List`'s `items`, when the object came from one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) item: Option<usize>,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: document {} (line {})", self.source, self.document, self.line)?;
        if let Some(item) = self.item {
            write!(f, ", item {item}")?;
        }
        Ok(())
    }
}

/// Input that could not be read. Nothing is checked when the input is bad.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ManifestError {
    /// The YAML itself is malformed.
    #[error("{source_name}: document {document}, line {line}, column {column}: {message}")]
    Syntax { source_name: String, document: usize, line: usize, column: usize, message: String },
    /// A known kind whose fields do not have the right types.
    #[error(transparent)]
    Shape(Box<ShapeError>),
}

/// An object of a known kind whose fields do not have the right types.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {kind} {name:?}: {message}")]
pub(crate) struct ShapeError {
    origin: Origin,
    kind: String,
    name: String,
    message: String,
}

/// A workload's pod template, with what the timing rules need to know about it.
#[derive(Clone, Debug)]
pub(crate) struct Workload {
    pub(crate) origin: Origin,
    pub(crate) kind: String,
    pub(crate) name: String,
    pub(crate) namespace: Option<String>,
    pub(crate) template: PodTemplateSpec,
    /// Job and CronJob pods, and bare pods whose `restartPolicy` lets them finish.
    pub(crate) runs_to_completion: bool,
}

impl Workload {
    pub(crate) fn labels(&self) -> BTreeMap<String, String> {
        self.template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default()
    }

    pub(crate) fn annotations(&self) -> BTreeMap<String, String> {
        self.template.metadata.as_ref().and_then(|m| m.annotations.clone()).unwrap_or_default()
    }
}

/// Everything read from one input.
#[derive(Debug, Default)]
pub(crate) struct Manifests {
    pub(crate) workloads: Vec<Workload>,
    pub(crate) policies: Vec<ShutdownPolicy>,
    /// Objects with no pod template, as `Kind/name` with where they are.
    pub(crate) skipped: Vec<(String, Origin)>,
}

/// One document's text and the line it starts on.
struct Chunk {
    text: String,
    first_line: usize,
}

/// Splits a stream at `---` lines (and `...` end markers). A document's text starts with its
/// marker line blanked, so line N of the text is line `first_line + N - 1` of the input.
fn split_documents(input: &str) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let mut current = String::new();
    let mut first_line = 1;
    for (index, line) in input.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_start = bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t");
        let is_end = bare == "..." || bare.starts_with("... ");
        if is_start || is_end {
            if current.trim().is_empty() {
                current.clear();
            } else {
                chunks.push(Chunk { text: std::mem::take(&mut current), first_line });
            }
            first_line = index + 1;
            // Content after `--- ` (such as a flow mapping) belongs to the new document.
            if is_start && bare.len() > 3 {
                current.push_str("   ");
                current.push_str(&line[3..]);
            } else {
                current.push('\n');
            }
            continue;
        }
        current.push_str(line);
    }
    if !current.trim().is_empty() {
        chunks.push(Chunk { text: current, first_line });
    }
    chunks
}

/// Reads every document of `input`; `source_name` names it in errors (a path, or `-`).
pub(crate) fn parse(source_name: &str, input: &str) -> Result<Manifests, ManifestError> {
    let mut out = Manifests::default();
    for (index, chunk) in split_documents(input).into_iter().enumerate() {
        let document = index + 1;
        let value: Value = serde_yaml_ng::from_str(&chunk.text).map_err(|err| {
            let (line, column) = err.location().map_or((0, 0), |l| (l.line(), l.column()));
            let line = if line == 0 { chunk.first_line } else { line + chunk.first_line - 1 };
            ManifestError::Syntax {
                source_name: source_name.to_owned(),
                document,
                line,
                column,
                message: strip_location(&err.to_string()),
            }
        })?;
        let content_offset = chunk
            .text
            .lines()
            .position(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .unwrap_or(0);
        let origin = Origin {
            source: source_name.to_owned(),
            document,
            line: chunk.first_line + content_offset,
            item: None,
        };
        collect(value, origin, &mut out)?;
    }
    Ok(out)
}

/// serde_yaml_ng appends ` at line N column M`; the caller reports a corrected location itself.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

fn str_field<'v>(value: &'v Value, key: &str) -> Option<&'v str> {
    value.get(key).and_then(Value::as_str)
}

fn collect(value: Value, origin: Origin, out: &mut Manifests) -> Result<(), ManifestError> {
    if value.is_null() {
        return Ok(());
    }
    let kind = str_field(&value, "kind").unwrap_or_default().to_owned();
    let name = value
        .get("metadata")
        .and_then(|m| str_field(m, "name").or_else(|| str_field(m, "generateName")))
        .unwrap_or("<unnamed>")
        .to_owned();
    let shape_error = |message: String| {
        ManifestError::Shape(Box::new(ShapeError {
            origin: origin.clone(),
            kind: kind.clone(),
            name: name.clone(),
            message,
        }))
    };
    fn typed<T: DeserializeOwned>(value: Value) -> Result<T, String> {
        serde_yaml_ng::from_value(value).map_err(|e| e.to_string())
    }

    let api_version = str_field(&value, "apiVersion").unwrap_or_default();
    let (template, runs_to_completion, namespace) = match kind.as_str() {
        "List" => {
            let items = match value.get("items") {
                Some(Value::Sequence(items)) => items.clone(),
                None | Some(Value::Null) => Vec::new(),
                Some(_) => return Err(shape_error("items must be a list".into())),
            };
            for (i, item) in items.into_iter().enumerate() {
                let item_origin = Origin { item: Some(i + 1), ..origin.clone() };
                collect(item, item_origin, out)?;
            }
            return Ok(());
        }
        "ShutdownPolicy" if api_version.starts_with(lameduck_api::names::GROUP) => {
            out.policies.push(typed::<ShutdownPolicy>(value).map_err(shape_error)?);
            return Ok(());
        }
        "Pod" => {
            let pod: Pod = typed(value).map_err(shape_error)?;
            let spec = pod.spec.ok_or_else(|| shape_error("missing spec".into()))?;
            let finishes = spec.restart_policy.as_deref().is_some_and(|p| p != "Always");
            let template = PodTemplateSpec { metadata: Some(pod.metadata.clone()), spec: Some(spec) };
            (Some(template), finishes, pod.metadata.namespace)
        }
        "Deployment" => {
            let d: Deployment = typed(value).map_err(shape_error)?;
            (d.spec.map(|s| s.template), false, d.metadata.namespace)
        }
        "StatefulSet" => {
            let s: StatefulSet = typed(value).map_err(shape_error)?;
            (s.spec.map(|s| s.template), false, s.metadata.namespace)
        }
        "DaemonSet" => {
            let d: DaemonSet = typed(value).map_err(shape_error)?;
            (d.spec.map(|s| s.template), false, d.metadata.namespace)
        }
        "ReplicaSet" => {
            let r: ReplicaSet = typed(value).map_err(shape_error)?;
            (r.spec.and_then(|s| s.template), false, r.metadata.namespace)
        }
        "Job" => {
            let j: Job = typed(value).map_err(shape_error)?;
            (j.spec.map(|s| s.template), true, j.metadata.namespace)
        }
        "CronJob" => {
            let c: CronJob = typed(value).map_err(shape_error)?;
            let template = c.spec.and_then(|s| s.job_template.spec).map(|s| s.template);
            (template, true, c.metadata.namespace)
        }
        _ => {
            let shown = if kind.is_empty() { "<no kind>".to_owned() } else { kind.clone() };
            out.skipped.push((format!("{shown}/{name}"), origin));
            return Ok(());
        }
    };
    let template = template
        .filter(|t| t.spec.is_some())
        .ok_or_else(|| shape_error("missing pod template spec".into()))?;
    out.workloads.push(Workload { origin, kind, name, namespace, template, runs_to_completion });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = "\
apiVersion: v1
kind: Pod
metadata: {name: a}
spec:
  containers: [{name: app}]
---
# a comment
apiVersion: batch/v1
kind: Job
metadata: {name: b, namespace: jobs}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: main}]
";

    #[test]
    fn reads_every_document_with_its_line() {
        let m = parse("in.yaml", TWO).unwrap();
        let got: Vec<_> = m
            .workloads
            .iter()
            .map(|w| (w.kind.as_str(), w.name.as_str(), w.origin.line, w.runs_to_completion))
            .collect();
        // The Job's document starts at `---` on line 6; its content (past a comment) on line 8.
        assert_eq!(got, [("Pod", "a", 1, false), ("Job", "b", 8, true)]);
        assert_eq!(m.workloads[1].namespace.as_deref(), Some("jobs"));
    }

    #[test]
    fn syntax_errors_name_document_and_absolute_line() {
        let bad = format!("{TWO}---\nkind: Pod\nmetadata: {{name: c\nspec: {{}}\n");
        let err = parse("in.yaml", &bad).unwrap_err().to_string();
        assert!(err.starts_with("in.yaml: document 3, line "), "{err}");
        let line: usize =
            err["in.yaml: document 3, line ".len()..].split(',').next().unwrap().parse().unwrap();
        assert!((17..=20).contains(&line), "{err}");
        assert!(!err.contains(" at line "), "{err}");
    }

    #[test]
    fn type_errors_name_the_object() {
        let bad = "kind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    spec:\n      containers: nope\n";
        let err = parse("-", bad).unwrap_err().to_string();
        assert!(err.starts_with("-: document 1 (line 1): Deployment \"web\": "), "{err}");
    }

    #[test]
    fn lists_unknown_kinds_and_policies() {
        let input = "\
apiVersion: v1
kind: List
items:
- {kind: ConfigMap, metadata: {name: cm}}
- kind: Deployment
  metadata: {name: web}
  spec: {template: {spec: {containers: [{name: app}]}}}
--- {apiVersion: lameduck.io/v1alpha1, kind: ShutdownPolicy, metadata: {name: p}, spec: {}}
";
        let m = parse("-", input).unwrap();
        assert_eq!(m.workloads.len(), 1);
        assert_eq!(m.workloads[0].origin.item, Some(2));
        let origin = Origin { source: "-".into(), document: 1, line: 1, item: Some(1) };
        assert_eq!(m.skipped, [("ConfigMap/cm".to_owned(), origin)]);
        assert_eq!(m.policies.len(), 1);
    }

    #[test]
    fn cronjob_and_bare_pod_restart_policies() {
        let input = "\
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: '@daily'
  jobTemplate: {spec: {template: {spec: {restartPolicy: OnFailure, containers: [{name: c}]}}}}
---
kind: Pod
metadata: {name: once}
spec: {restartPolicy: Never, containers: [{name: c}]}
";
        let m = parse("-", input).unwrap();
        assert!(m.workloads.iter().all(|w| w.runs_to_completion));
    }

    #[test]
    fn empty_documents_and_markers_are_ignored() {
        let m = parse("-", "---\n---\n...\n\n").unwrap();
        assert!(m.workloads.is_empty() && m.skipped.is_empty());
        let json = r#"{"kind": "Pod", "metadata": {"name": "j"}, "spec": {"containers": [{"name": "c"}]}}"#;
        assert_eq!(parse("-", json).unwrap().workloads.len(), 1);
    }

    #[test]
    fn no_prefix_of_a_manifest_panics() {
        // Cut a real manifest at every byte: each prefix either parses or is a clean error.
        let input = format!(
            "{TWO}---\nkind: List\nitems:\n- kind: CronJob\n  metadata: {{name: x}}\n  spec: {{jobTemplate: {{spec: {{template: {{spec: {{containers: [{{name: c}}]}}}}}}}}}}\n"
        );
        for end in (0..=input.len()).filter(|i| input.is_char_boundary(*i)) {
            let _ = parse("-", &input[..end]);
        }
        for garbage in [
            "\t",
            "{",
            "[",
            "- - -",
            "kind: [",
            "kind: Pod\nspec: 3",
            "items: 3\nkind: List",
            "\u{feff}kind: Pod",
            ": :",
            "&a [*a]",
            "!!binary x",
        ] {
            let _ = parse("-", garbage);
        }
    }
}

//! Reading Kubernetes manifests: multi-document YAML (or JSON) into documents that keep their
//! text, and those into workloads with pod templates.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet},
    batch::v1::{CronJob, Job},
    core::v1::{Pod, PodTemplateSpec},
};
use lameduck_api::{ShutdownPolicy, shape::PodShape};
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

/// Input that could not be read. Nothing is checked or written when the input is bad.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ManifestError {
    /// The YAML itself is malformed.
    #[error("{source_name}: document {document}, line {line}, column {column}: {message}")]
    Syntax { source_name: String, document: usize, line: usize, column: usize, message: String },
    /// A known kind whose fields do not have the right types.
    #[error(transparent)]
    Shape(Box<ShapeError>),
}

impl ManifestError {
    /// The object of `kind` named `name` at `origin` is not what its kind says.
    pub(crate) fn shape(origin: Origin, kind: &str, name: &str, message: String) -> Self {
        Self::Shape(Box::new(ShapeError { origin, kind: kind.to_owned(), name: name.to_owned(), message }))
    }
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
    /// What the YAML parser reads: the document with its start marker blanked.
    text: String,
    /// The document exactly as written, start marker excluded unless content follows it.
    verbatim: String,
    first_line: usize,
}

/// Splits a stream at `---` lines (and `...` end markers). A document's text starts with its
/// marker line blanked, so line N of the text is line `first_line + N - 1` of the input.
fn split_documents(input: &str) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let mut current = String::new();
    let mut verbatim = String::new();
    let mut first_line = 1;
    for (index, line) in input.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_start = bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t");
        let is_end = bare == "..." || bare.starts_with("... ");
        if is_start || is_end {
            if current.trim().is_empty() {
                current.clear();
            } else {
                chunks.push(Chunk {
                    text: std::mem::take(&mut current),
                    verbatim: std::mem::take(&mut verbatim),
                    first_line,
                });
            }
            verbatim.clear();
            first_line = index + 1;
            // Content after `--- ` (such as a flow mapping) belongs to the new document.
            if is_start && bare.len() > 3 {
                current.push_str("   ");
                current.push_str(&line[3..]);
                verbatim.push_str(line);
            } else {
                current.push('\n');
            }
            continue;
        }
        current.push_str(line);
        verbatim.push_str(line);
    }
    if !current.trim().is_empty() {
        chunks.push(Chunk { text: current, verbatim, first_line });
    }
    chunks
}

/// One document of a stream: where it is, its text as written, and its YAML.
#[derive(Debug)]
pub(crate) struct Document {
    pub(crate) origin: Origin,
    /// The document exactly as written, without the `---` line before it (unless content
    /// follows the marker on that line, as in `--- {kind: Pod}`).
    pub(crate) text: String,
    /// Length of the comments and blank lines at the start of `text`.
    preamble_len: usize,
    pub(crate) value: Value,
}

impl Document {
    /// The comments and blank lines before the document's content.
    pub(crate) fn preamble(&self) -> &str {
        &self.text[..self.preamble_len]
    }
}

/// Reads every document of `input` as YAML, stopping at the first malformed one; `source_name`
/// names it in errors (a path, or `-`).
pub(crate) fn documents(source_name: &str, input: &str) -> Result<Vec<Document>, ManifestError> {
    let mut out = Vec::new();
    for (index, chunk) in split_documents(input).into_iter().enumerate() {
        let document = index + 1;
        let syntax_error = |err: serde_yaml_ng::Error| {
            let (line, column) = err.location().map_or((0, 0), |l| (l.line(), l.column()));
            let line = if line == 0 { chunk.first_line } else { line + chunk.first_line - 1 };
            ManifestError::Syntax {
                source_name: source_name.to_owned(),
                document,
                line,
                column,
                message: strip_location(&err.to_string()),
            }
        };
        let mut value: Value = serde_yaml_ng::from_str(&chunk.text).map_err(syntax_error)?;
        // kubectl reads `<<: *anchor` as YAML 1.1's merge key; so must the rules, and a document
        // written back must not turn it into a literal `"<<"` key.
        value.apply_merge().map_err(syntax_error)?;
        let is_content = |l: &str| !l.trim().is_empty() && !l.trim_start().starts_with('#');
        let content_offset = chunk.text.lines().position(is_content).unwrap_or(0);
        // Counted on the verbatim text, where a `--- ...` line counts as content: a preamble
        // never holds a document marker.
        let preamble_len =
            chunk.verbatim.split_inclusive('\n').take_while(|l| !is_content(l)).map(str::len).sum();
        out.push(Document {
            origin: Origin {
                source: source_name.to_owned(),
                document,
                line: chunk.first_line + content_offset,
                item: None,
            },
            text: chunk.verbatim,
            preamble_len,
            value,
        });
    }
    Ok(out)
}

/// Reads every document of `input`; `source_name` names it in errors (a path, or `-`).
pub(crate) fn parse(source_name: &str, input: &str) -> Result<Manifests, ManifestError> {
    let mut out = Manifests::default();
    for document in documents(source_name, input)? {
        read(document.value, document.origin, &mut out)?;
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

/// An object's `kind`, or empty.
pub(crate) fn kind_of(value: &Value) -> &str {
    str_field(value, "kind").unwrap_or_default()
}

/// An object's name (or `generateName`) for messages.
pub(crate) fn name_of(value: &Value) -> &str {
    value
        .get("metadata")
        .and_then(|m| str_field(m, "name").or_else(|| str_field(m, "generateName")))
        .unwrap_or("<unnamed>")
}

/// The kinds that carry a pod template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WorkloadKind {
    Pod,
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    Job,
    CronJob,
}

impl WorkloadKind {
    pub(crate) fn of(kind: &str) -> Option<Self> {
        Some(match kind {
            "Pod" => Self::Pod,
            "Deployment" => Self::Deployment,
            "StatefulSet" => Self::StatefulSet,
            "DaemonSet" => Self::DaemonSet,
            "ReplicaSet" => Self::ReplicaSet,
            "Job" => Self::Job,
            "CronJob" => Self::CronJob,
            _ => return None,
        })
    }

    /// The keys that lead from the object to its pod template. None for a Pod: its own
    /// `metadata` and `spec` are the template's.
    pub(crate) const fn template_path(self) -> &'static [&'static str] {
        match self {
            Self::Pod => &[],
            Self::Deployment | Self::StatefulSet | Self::DaemonSet | Self::ReplicaSet | Self::Job => {
                &["spec", "template"]
            }
            Self::CronJob => &["spec", "jobTemplate", "spec", "template"],
        }
    }

    /// Reads the whole object as its typed kind, so a wrong type anywhere in it is reported.
    fn validate(self, value: &Value) -> Result<(), String> {
        match self {
            Self::Pod => typed::<Pod>(value).map(drop),
            Self::Deployment => typed::<Deployment>(value).map(drop),
            Self::StatefulSet => typed::<StatefulSet>(value).map(drop),
            Self::DaemonSet => typed::<DaemonSet>(value).map(drop),
            Self::ReplicaSet => typed::<ReplicaSet>(value).map(drop),
            Self::Job => typed::<Job>(value).map(drop),
            Self::CronJob => typed::<CronJob>(value).map(drop),
        }
    }
}

fn typed<T: DeserializeOwned>(value: &Value) -> Result<T, String> {
    // `T::deserialize(value)` borrows; the error text is the same as from an owned value.
    T::deserialize(value).map_err(|e| e.to_string())
}

/// Whether `value` is one of lameduck's `ShutdownPolicy` objects.
pub(crate) fn is_policy(value: &Value) -> bool {
    kind_of(value) == "ShutdownPolicy"
        && str_field(value, "apiVersion").unwrap_or_default().starts_with(lameduck_api::names::GROUP)
}

/// Reads one object (a `List`'s items one by one) into `out`, checking the fields of every kind
/// it knows.
pub(crate) fn read(value: Value, origin: Origin, out: &mut Manifests) -> Result<(), ManifestError> {
    if value.is_null() {
        return Ok(());
    }
    let kind = kind_of(&value).to_owned();
    let name = name_of(&value).to_owned();
    let shape_error = |message: String| ManifestError::shape(origin.clone(), &kind, &name, message);

    if kind == "List" {
        let items = match value.get("items") {
            Some(Value::Sequence(items)) => items.clone(),
            None | Some(Value::Null) => Vec::new(),
            Some(_) => return Err(shape_error("items must be a list".into())),
        };
        for (i, item) in items.into_iter().enumerate() {
            let item_origin = Origin { item: Some(i + 1), ..origin.clone() };
            read(item, item_origin, out)?;
        }
        return Ok(());
    }
    if is_policy(&value) {
        out.policies.push(typed::<ShutdownPolicy>(&value).map_err(shape_error)?);
        return Ok(());
    }
    let Some(workload) = WorkloadKind::of(&kind) else {
        let shown = if kind.is_empty() { "<no kind>".to_owned() } else { kind.clone() };
        out.skipped.push((format!("{shown}/{name}"), origin));
        return Ok(());
    };
    workload.validate(&value).map_err(shape_error)?;
    let template = workload
        .template_path()
        .iter()
        .try_fold(&value, |at, key| at.get(key))
        .map(typed::<PodTemplateSpec>)
        .transpose()
        .map_err(shape_error)?
        .filter(|t| t.spec.is_some())
        .ok_or_else(|| {
            let missing = if workload == WorkloadKind::Pod { "spec" } else { "pod template spec" };
            shape_error(format!("missing {missing}"))
        })?;
    let owner_finishes = matches!(workload, WorkloadKind::Job | WorkloadKind::CronJob);
    let spec = template.spec.as_ref().expect("filtered above");
    let runs_to_completion = PodShape::new(spec, None, owner_finishes).runs_to_completion;
    let namespace = value.get("metadata").and_then(|m| str_field(m, "namespace")).map(str::to_owned);
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
    fn merge_keys_are_applied() {
        let input = "\
kind: Pod
metadata: {name: m}
x-base: &base {image: app:1, lifecycle: {preStop: {sleep: {seconds: 5}}}}
spec:
  containers:
  - <<: *base
    name: app
";
        let m = parse("-", input).unwrap();
        let app = &m.workloads[0].template.spec.as_ref().unwrap().containers[0];
        assert_eq!((app.name.as_str(), app.image.as_deref()), ("app", Some("app:1")));
        assert!(app.lifecycle.is_some());
        let err = parse("-", "kind: Pod\nspec: {<<: [[1]]}\n").unwrap_err().to_string();
        assert!(err.starts_with("-: document 1, line 1, "), "{err}");
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

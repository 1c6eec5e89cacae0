//! Drain settings that can change while the proxy runs, read from a downward-API annotations
//! file (`key="value"` lines, values quoted the way Go's `%q` quotes them).
//!
//! The admission webhook writes a policy's drain settings into pod annotations; the kubelet keeps
//! the file in step with them, so a policy change reaches a running proxy without a restart.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use lameduck_api::{GoDuration, names::annotations};
use tokio::sync::watch;

use crate::{config::parse_bool, metrics::Metrics};

/// The settings the proxy reads on every use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) shutdown_grace_period: Duration,
    pub(crate) enable_shutdown_endpoint: bool,
}

/// Undoes Go's `%q` quoting. `None` when the text is not a quoted string.
fn unquote(text: &str) -> Option<String> {
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let escaped = match chars.next()? {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            'a' => '\u{7}',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'v' => '\u{b}',
            '\\' => '\\',
            '"' => '"',
            '\'' => '\'',
            kind @ ('x' | 'u' | 'U') => {
                let len = match kind {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let hex: String = chars.by_ref().take(len).collect();
                char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?
            }
            _ => return None,
        };
        out.push(escaped);
    }
    Some(out)
}

/// Reads an annotations file. Lines that cannot be read are returned as errors, not dropped
/// silently, and never stop the other lines from applying.
pub(crate) fn parse_annotations(text: &str) -> (BTreeMap<String, String>, Vec<String>) {
    let mut values = BTreeMap::new();
    let mut errors = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match line.split_once('=').and_then(|(key, value)| Some((key, unquote(value)?))) {
            Some((key, value)) => {
                values.insert(key.to_owned(), value);
            }
            None => errors.push(format!("line {}: expected key=\"value\", found {line:?}", index + 1)),
        }
    }
    (values, errors)
}

/// The flags' settings with the file's values on top. Bad values keep the flag's value.
pub(crate) fn apply(base: Settings, file: &BTreeMap<String, String>) -> (Settings, Vec<String>) {
    let mut settings = base;
    let mut errors = Vec::new();
    if let Some(text) = file.get(annotations::SHUTDOWN_GRACE_PERIOD) {
        match text.parse::<GoDuration>() {
            Ok(value) => settings.shutdown_grace_period = value.as_std(),
            Err(err) => errors.push(format!("{}: {err}", annotations::SHUTDOWN_GRACE_PERIOD)),
        }
    }
    if let Some(text) = file.get(annotations::ENABLE_SHUTDOWN_ENDPOINT) {
        match parse_bool(text) {
            Some(value) => settings.enable_shutdown_endpoint = value,
            None => errors
                .push(format!("{}: {text:?} is not true or false", annotations::ENABLE_SHUTDOWN_ENDPOINT)),
        }
    }
    (settings, errors)
}

/// The settings file and what was last read from it.
struct SettingsFile {
    path: PathBuf,
    base: Settings,
    last_text: Option<String>,
    metrics: Arc<Metrics>,
}

impl SettingsFile {
    /// Reads the file; `Some` when its content changed. The read goes through tokio's blocking
    /// pool: the proxy has one event-loop thread, and a slow filesystem must not stall traffic.
    async fn load(&mut self) -> Option<Settings> {
        let text = match tokio::fs::read_to_string(&self.path).await {
            Ok(text) => text,
            Err(err) => {
                if self.last_text.is_some() || err.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %self.path.display(), error = %err, "cannot read settings file; keeping current settings");
                }
                return None;
            }
        };
        if self.last_text.as_deref() == Some(text.as_str()) {
            return None;
        }
        let (values, mut errors) = parse_annotations(&text);
        let (settings, apply_errors) = apply(self.base, &values);
        errors.extend(apply_errors);
        for error in &errors {
            self.metrics.settings_errors.inc();
            tracing::warn!(path = %self.path.display(), %error, "ignoring a settings-file value");
        }
        self.last_text = Some(text);
        Some(settings)
    }
}

/// Reads `path` now and then every `interval`, publishing the effective settings. Without a path
/// the flags' settings never change. Problems are logged and counted; the last good settings stay.
pub(crate) async fn watch(
    base: Settings,
    path: Option<PathBuf>,
    interval: Duration,
    metrics: Arc<Metrics>,
) -> watch::Receiver<Settings> {
    let (tx, rx) = watch::channel(base);
    let Some(path) = path else { return rx };
    let mut file = SettingsFile { path, base, last_text: None, metrics };
    // The first read completes before the proxy serves, so its first answers use the file.
    if let Some(settings) = file.load().await {
        tx.send_replace(settings);
    }
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if let Some(settings) = file.load().await {
                if *tx.borrow() != settings {
                    tracing::info!(
                        shutdown_grace_period = %GoDuration::from(settings.shutdown_grace_period),
                        enable_shutdown_endpoint = settings.enable_shutdown_endpoint,
                        "settings changed"
                    );
                }
                if tx.send(settings).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Settings =
        Settings { shutdown_grace_period: Duration::from_secs(120), enable_shutdown_endpoint: false };

    #[test]
    fn reads_downward_api_format() {
        let text = "kubernetes.io/config.seen=\"2026-11-21T08:00:00Z\"\nlameduck.io/enable-shutdown-endpoint=\"true\"\nlameduck.io/shutdown-grace-period=\"45s\"\nnote=\"a \\\"quoted\\\" word\\n\\u00e9\"\n";
        let (values, errors) = parse_annotations(text);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(values["note"], "a \"quoted\" word\n\u{e9}");
        let (settings, errors) = apply(BASE, &values);
        assert!(errors.is_empty());
        assert_eq!(
            settings,
            Settings { shutdown_grace_period: Duration::from_secs(45), enable_shutdown_endpoint: true }
        );
    }

    #[test]
    fn bad_lines_and_values_are_reported_and_keep_the_flags() {
        let text = "garbage line\nlameduck.io/shutdown-grace-period=\"soon\"\nlameduck.io/enable-shutdown-endpoint=unquoted\n";
        let (values, errors) = parse_annotations(text);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("line 1"));
        let (settings, errors) = apply(BASE, &values);
        assert_eq!(settings, BASE);
        assert!(
            errors[0].contains("lameduck.io/shutdown-grace-period") && errors[0].contains("soon"),
            "{errors:?}"
        );
    }

    #[test]
    fn unquote_rejects_what_go_would_not_write() {
        assert_eq!(unquote("\"plain\"").as_deref(), Some("plain"));
        assert_eq!(unquote("\"tab\\there\"").as_deref(), Some("tab\there"));
        assert_eq!(unquote("\"\\x41\"").as_deref(), Some("A"));
        assert_eq!(unquote("plain"), None);
        assert_eq!(unquote("\"dangling\\\""), None);
        assert_eq!(unquote("\"\\q\""), None);
    }
}

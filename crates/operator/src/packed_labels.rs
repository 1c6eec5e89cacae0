//! Labels as the operator's caches keep them: one allocation per pod instead of a map.

use std::collections::BTreeMap;

/// Labels in one allocation: `key NUL value NUL key NUL value`. A `BTreeMap` of three labels
/// takes over 700 bytes (a node sized for eleven entries, and a heap string each); this takes
/// their length. Neither keys nor values can hold a NUL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackedLabels(Option<Box<str>>);

impl PackedLabels {
    pub fn pack(labels: &BTreeMap<String, String>) -> Self {
        if labels.is_empty() {
            return Self(None);
        }
        let mut packed = String::new();
        for (key, value) in labels {
            if !packed.is_empty() {
                packed.push('\0');
            }
            packed.push_str(key);
            packed.push('\0');
            packed.push_str(value);
        }
        Self(Some(packed.into_boxed_str()))
    }

    pub fn unpack(&self) -> Option<BTreeMap<String, String>> {
        let packed = self.0.as_deref()?;
        let mut parts = packed.split('\0');
        let mut labels = BTreeMap::new();
        while let (Some(key), Some(value)) = (parts.next(), parts.next()) {
            labels.insert(key.to_owned(), value.to_owned());
        }
        Some(labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_back_as_they_went_in() {
        let labels = BTreeMap::from([
            ("app".to_owned(), "web".to_owned()),
            ("batch.kubernetes.io/job-name".to_owned(), "report".to_owned()),
            ("empty".to_owned(), String::new()),
        ]);
        assert_eq!(PackedLabels::pack(&labels).unpack(), Some(labels));
        assert_eq!(PackedLabels::pack(&BTreeMap::new()).unpack(), None);
    }
}

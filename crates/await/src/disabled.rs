//! The switches that skip the readiness wait (never the shutdown), as linkerd-await reads them:
//! any non-empty value disables, and the value is the reason, logged with `-v`.

use lameduck_api::names::env;

/// Checked in this order; the first non-empty one wins.
pub const DISABLE_VARIABLES: [&str; 3] =
    [env::AWAIT_DISABLED, env::LINKERD_AWAIT_DISABLED, env::LINKERD_DISABLED];

/// The variable that disables the wait and its value, if one does.
pub fn disabled_by(lookup: impl Fn(&str) -> Option<String>) -> Option<(&'static str, String)> {
    DISABLE_VARIABLES
        .into_iter()
        .find_map(|name| lookup(name).filter(|value| !value.is_empty()).map(|value| (name, value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| pairs.iter().find(|(key, _)| *key == name).map(|(_, value)| (*value).to_owned())
    }

    #[test]
    fn any_non_empty_value_disables() {
        assert_eq!(disabled_by(lookup(&[])), None);
        assert_eq!(disabled_by(lookup(&[("LAMEDUCK_AWAIT_DISABLED", "")])), None);
        assert_eq!(
            disabled_by(lookup(&[("LINKERD_AWAIT_DISABLED", "no mesh here")])),
            Some(("LINKERD_AWAIT_DISABLED", "no mesh here".to_owned()))
        );
        assert_eq!(disabled_by(lookup(&[("LINKERD_DISABLED", "x")])).unwrap().0, "LINKERD_DISABLED");
    }

    #[test]
    fn lameduck_name_wins() {
        let found = disabled_by(lookup(&[("LINKERD_AWAIT_DISABLED", "b"), ("LAMEDUCK_AWAIT_DISABLED", "a")]));
        assert_eq!(found, Some(("LAMEDUCK_AWAIT_DISABLED", "a".to_owned())));
    }
}

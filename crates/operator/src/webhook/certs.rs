//! The webhook's certificates, managed by the operator itself so that no cert-manager is needed:
//! a CA it creates, and a serving certificate that CA signs for the webhook Service's names.
//!
//! Pure: [`plan`] reads what is stored and says what to renew; [`issue`] makes the new bundle.
//! Each is renewed when less than a third of its validity is left. A renewed CA does not replace
//! the old one in the trust bundle at once: the old CA stays until it expires, so that API servers
//! still holding the old `caBundle` keep trusting the replicas that already serve the new
//! certificate, and the other way round.

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use lameduck_api::names::webhook as names;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;
use x509_parser::{
    certificate::X509Certificate,
    extensions::{GeneralName, ParsedExtension},
    pem::Pem,
    prelude::FromDer,
};

/// The PEM texts kept in the webhook's Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bundle {
    /// CA certificates that clients should trust, newest (the signing one) first.
    pub ca_certs: Vec<String>,
    /// The newest CA's private key.
    pub ca_key: String,
    /// The serving certificate.
    pub cert: String,
    /// The serving certificate's private key.
    pub key: String,
}

impl Bundle {
    /// Reads a Secret's data; `None` when a key is missing or not text.
    pub fn from_secret_data(data: &BTreeMap<String, Vec<u8>>) -> Option<Self> {
        let text = |key: &str| data.get(key).and_then(|bytes| String::from_utf8(bytes.clone()).ok());
        let ca = text(names::CA_CERT_KEY)?;
        Some(Self {
            ca_certs: split_pem(&ca),
            ca_key: text(names::CA_KEY_KEY)?,
            cert: text(names::TLS_CERT_KEY)?,
            key: text(names::TLS_KEY_KEY)?,
        })
    }

    /// The Secret's data (a `kubernetes.io/tls` Secret, plus the CA).
    pub fn to_secret_data(&self) -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([
            (names::CA_CERT_KEY.to_owned(), self.ca_bundle()),
            (names::CA_KEY_KEY.to_owned(), self.ca_key.clone().into_bytes()),
            (names::TLS_CERT_KEY.to_owned(), self.cert.clone().into_bytes()),
            (names::TLS_KEY_KEY.to_owned(), self.key.clone().into_bytes()),
        ])
    }

    /// What goes into the webhook configurations' `caBundle`: every CA still trusted.
    pub fn ca_bundle(&self) -> Vec<u8> {
        self.ca_certs.concat().into_bytes()
    }
}

/// Splits concatenated PEM blocks into one text each.
fn split_pem(text: &str) -> Vec<String> {
    const END: &str = "-----END CERTIFICATE-----";
    text.split_inclusive(END)
        .map(str::trim)
        .filter(|block| block.ends_with(END))
        .map(|block| format!("{block}\n"))
        .collect()
}

/// What the certificates must be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSettings {
    /// DNS names and IP addresses the serving certificate is for.
    pub hosts: Vec<String>,
    /// How long a serving certificate is valid.
    pub cert_validity: Duration,
    /// How long a CA is valid.
    pub ca_validity: Duration,
}

/// Why something is renewed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Nothing is stored yet.
    Missing,
    /// What is stored cannot be read.
    Unreadable(String),
    /// Less than a third of the CA's validity is left.
    CaExpiring,
    /// Less than a third of the serving certificate's validity is left.
    CertExpiring,
    /// The serving certificate is for other names than `--webhook-host` and the Service's.
    HostsChanged,
    /// The serving certificate was not issued by the newest CA.
    NotIssuedByCa,
    /// An old CA in the bundle has expired and can be dropped.
    ExpiredCaInBundle,
}

/// What to do with the stored certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// They are good.
    Keep,
    /// Issue a new serving certificate from the current CA.
    Serving(Reason),
    /// Create a new CA (keeping the old one trusted until it expires) and a serving certificate.
    All(Reason),
}

/// What is read from one certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Facts {
    not_before: i64,
    not_after: i64,
    subject: Vec<u8>,
    issuer: Vec<u8>,
    /// Subject key identifier.
    key_id: Option<Vec<u8>>,
    /// Authority key identifier: the issuing CA's key identifier.
    authority_key_id: Option<Vec<u8>>,
    hosts: Vec<String>,
}

fn read(pem: &str) -> Result<Facts, String> {
    let (pem, _) = Pem::read(std::io::Cursor::new(pem.as_bytes())).map_err(|e| format!("not PEM: {e}"))?;
    let (_, cert) =
        X509Certificate::from_der(&pem.contents).map_err(|e| format!("not a certificate: {e}"))?;
    let mut hosts = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => hosts.push((*dns).to_owned()),
                GeneralName::IPAddress(bytes) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                        hosts.push(IpAddr::from(v4).to_string());
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                        hosts.push(IpAddr::from(v6).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    hosts.sort();
    let (mut key_id, mut authority_key_id) = (None, None);
    for extension in cert.extensions() {
        match extension.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => key_id = Some(id.0.to_vec()),
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                authority_key_id = aki.key_identifier.as_ref().map(|id| id.0.to_vec());
            }
            _ => {}
        }
    }
    Ok(Facts {
        key_id,
        authority_key_id,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        subject: cert.subject().as_raw().to_vec(),
        issuer: cert.issuer().as_raw().to_vec(),
        hosts,
    })
}

/// When a PEM certificate expires, in Unix seconds.
pub fn not_after(pem: &str) -> Option<i64> {
    read(pem).ok().map(|facts| facts.not_after)
}

/// Whether less than a third of the validity from `not_before` to `not_after` is left at `now`.
fn due(facts: &Facts, now: i64) -> bool {
    let lifetime = facts.not_after - facts.not_before;
    facts.not_after - now < lifetime / 3
}

/// Decides what to renew. `now` is in seconds since the Unix epoch.
pub fn plan(stored: Option<&Bundle>, settings: &CertSettings, now: i64) -> Plan {
    let Some(stored) = stored else { return Plan::All(Reason::Missing) };
    let Some(newest) = stored.ca_certs.first() else {
        return Plan::All(Reason::Unreadable("no CA certificate".into()));
    };
    let ca = match read(newest) {
        Ok(ca) => ca,
        Err(err) => return Plan::All(Reason::Unreadable(format!("CA: {err}"))),
    };
    if KeyPair::from_pem(&stored.ca_key).is_err() {
        return Plan::All(Reason::Unreadable("CA key".into()));
    }
    if due(&ca, now) {
        return Plan::All(Reason::CaExpiring);
    }
    let cert = match read(&stored.cert) {
        Ok(cert) => cert,
        Err(err) => return Plan::Serving(Reason::Unreadable(format!("serving certificate: {err}"))),
    };
    if KeyPair::from_pem(&stored.key).is_err() {
        return Plan::Serving(Reason::Unreadable("serving key".into()));
    }
    let mut wanted = settings.hosts.clone();
    wanted.sort();
    wanted.dedup();
    // Matched by name and by key: two CAs can share a name, never a key.
    if cert.issuer != ca.subject || cert.authority_key_id.is_none() || cert.authority_key_id != ca.key_id {
        Plan::Serving(Reason::NotIssuedByCa)
    } else if cert.hosts != wanted {
        Plan::Serving(Reason::HostsChanged)
    } else if due(&cert, now) {
        Plan::Serving(Reason::CertExpiring)
    } else if stored.ca_certs[1..].iter().any(|old| read(old).is_ok_and(|f| f.not_after <= now)) {
        Plan::Serving(Reason::ExpiredCaInBundle)
    } else {
        Plan::Keep
    }
}

/// Issuing failed (a key or certificate rcgen cannot make or read).
#[derive(Debug, thiserror::Error)]
#[error("webhook certificate: {0}")]
pub struct CertError(String);

fn err(context: &str) -> impl FnOnce(rcgen::Error) -> CertError + '_ {
    move |e| CertError(format!("{context}: {e}"))
}

fn validity(params: &mut CertificateParams, now: i64, length: Duration) -> Result<(), CertError> {
    let start = OffsetDateTime::from_unix_timestamp(now).map_err(|e| CertError(format!("clock: {e}")))?;
    // An hour of slack for clocks that are behind ours.
    params.not_before = start - time::Duration::hours(1);
    params.not_after =
        start + time::Duration::seconds(i64::try_from(length.as_secs()).unwrap_or(i64::MAX / 2));
    Ok(())
}

/// Makes the bundle `plan` asks for. `Plan::Keep` returns `stored` unchanged.
pub fn issue(
    plan: &Plan,
    stored: Option<&Bundle>,
    settings: &CertSettings,
    now: i64,
) -> Result<Bundle, CertError> {
    let (ca_certs, ca_key) = match (plan, stored) {
        (Plan::Keep, Some(stored)) => return Ok(stored.clone()),
        (Plan::Serving(_), Some(stored)) => (stored.ca_certs.clone(), stored.ca_key.clone()),
        _ => {
            let key = KeyPair::generate().map_err(err("CA key"))?;
            let mut params = CertificateParams::default();
            // A name unique to this CA: a serving certificate is matched to its CA by name.
            params.distinguished_name.push(DnType::CommonName, format!("lameduck webhook CA {now}"));
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            validity(&mut params, now, settings.ca_validity)?;
            let cert = params.self_signed(&key).map_err(err("CA certificate"))?;
            // The old CAs stay trusted until they expire.
            let old = stored.map(|s| s.ca_certs.clone()).unwrap_or_default();
            (std::iter::once(cert.pem()).chain(old).collect::<Vec<_>>(), key.serialize_pem())
        }
    };
    let ca_certs: Vec<String> = ca_certs
        .into_iter()
        .enumerate()
        .filter(|(i, pem)| *i == 0 || read(pem).is_ok_and(|f| f.not_after > now))
        .map(|(_, pem)| pem)
        .collect();
    let ca_key_pair = KeyPair::from_pem(&ca_key).map_err(err("CA key"))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_certs[0], ca_key_pair).map_err(err("CA certificate"))?;

    let key = KeyPair::generate().map_err(err("serving key"))?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(
        DnType::CommonName,
        settings.hosts.first().cloned().unwrap_or_else(|| "lameduck-webhook".into()),
    );
    params.subject_alt_names = settings
        .hosts
        .iter()
        .map(|host| match host.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => host
                .clone()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|e| CertError(format!("--webhook-host {host:?}: {e}"))),
        })
        .collect::<Result<_, _>>()?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, now, settings.cert_validity)?;
    let cert = params.signed_by(&key, &issuer).map_err(err("serving certificate"))?;
    Ok(Bundle { ca_certs, ca_key, cert: cert.pem(), key: key.serialize_pem() })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;
    const NOW: i64 = 1_790_000_000;

    fn settings() -> CertSettings {
        CertSettings {
            hosts: vec!["lameduck-webhook.lameduck.svc".into(), "127.0.0.1".into()],
            cert_validity: Duration::from_secs(90 * DAY as u64),
            ca_validity: Duration::from_secs(3650 * DAY as u64),
        }
    }

    fn fresh() -> Bundle {
        issue(&Plan::All(Reason::Missing), None, &settings(), NOW).unwrap()
    }

    #[test]
    fn a_fresh_bundle_is_kept_and_survives_the_secret() {
        let bundle = fresh();
        assert_eq!(bundle.ca_certs.len(), 1);
        assert_eq!(plan(Some(&bundle), &settings(), NOW), Plan::Keep);
        let read_back = Bundle::from_secret_data(&bundle.to_secret_data()).unwrap();
        assert_eq!(read_back, bundle);
        let facts = read(&bundle.cert).unwrap();
        assert_eq!(facts.hosts, ["127.0.0.1", "lameduck-webhook.lameduck.svc"]);
        assert_eq!(facts.not_after - NOW, 90 * DAY);
    }

    #[test]
    fn nothing_or_garbage_stored_means_a_new_ca() {
        assert_eq!(plan(None, &settings(), NOW), Plan::All(Reason::Missing));
        let garbage = Bundle { ca_certs: vec!["nope".into()], ..fresh() };
        assert!(matches!(plan(Some(&garbage), &settings(), NOW), Plan::All(Reason::Unreadable(_))));
        let no_key = Bundle { ca_key: "nope".into(), ..fresh() };
        assert!(matches!(plan(Some(&no_key), &settings(), NOW), Plan::All(Reason::Unreadable(_))));
        let bad_cert = Bundle { cert: String::new(), ..fresh() };
        assert!(matches!(plan(Some(&bad_cert), &settings(), NOW), Plan::Serving(Reason::Unreadable(_))));
        let data = BTreeMap::from([(names::CA_CERT_KEY.to_owned(), b"x".to_vec())]);
        assert_eq!(Bundle::from_secret_data(&data), None);
    }

    #[test]
    fn the_serving_certificate_is_renewed_with_a_third_left_and_keeps_its_ca() {
        let bundle = fresh();
        assert_eq!(plan(Some(&bundle), &settings(), NOW + 59 * DAY), Plan::Keep);
        let later = NOW + 61 * DAY;
        let decision = plan(Some(&bundle), &settings(), later);
        assert_eq!(decision, Plan::Serving(Reason::CertExpiring));
        let renewed = issue(&decision, Some(&bundle), &settings(), later).unwrap();
        assert_eq!(renewed.ca_certs, bundle.ca_certs, "the caBundle does not change");
        assert_ne!(renewed.cert, bundle.cert);
        assert_eq!(plan(Some(&renewed), &settings(), later), Plan::Keep);
    }

    #[test]
    fn a_renewed_ca_keeps_the_old_one_trusted_until_it_expires() {
        let bundle = fresh();
        let later = NOW + 2500 * DAY;
        let decision = plan(Some(&bundle), &settings(), later);
        assert_eq!(decision, Plan::All(Reason::CaExpiring));
        let renewed = issue(&decision, Some(&bundle), &settings(), later).unwrap();
        assert_eq!(renewed.ca_certs.len(), 2);
        assert_eq!(renewed.ca_certs[1], bundle.ca_certs[0]);
        assert_eq!(read(&renewed.cert).unwrap().issuer, read(&renewed.ca_certs[0]).unwrap().subject);
        assert_eq!(plan(Some(&renewed), &settings(), later), Plan::Keep);
        // Once the old CA has expired it is dropped.
        let after_old = NOW + 3651 * DAY;
        let decision = plan(Some(&renewed), &settings(), after_old);
        assert_eq!(decision, Plan::Serving(Reason::CertExpiring));
        let pruned = issue(&decision, Some(&renewed), &settings(), after_old).unwrap();
        assert_eq!(pruned.ca_certs, renewed.ca_certs[..1]);
    }

    #[test]
    fn other_hosts_or_another_ca_mean_a_new_serving_certificate() {
        let bundle = fresh();
        let mut moved = settings();
        moved.hosts.push("lameduck-webhook.other.svc".into());
        assert_eq!(plan(Some(&bundle), &moved, NOW), Plan::Serving(Reason::HostsChanged));
        let other = fresh();
        let mixed = Bundle { cert: other.cert.clone(), key: other.key.clone(), ..bundle };
        assert_eq!(plan(Some(&mixed), &settings(), NOW + 1), Plan::Serving(Reason::NotIssuedByCa));
        let bad_host = CertSettings { hosts: vec!["bäd.example".into()], ..settings() };
        assert!(issue(&Plan::All(Reason::Missing), None, &bad_host, NOW).is_err());
    }
}

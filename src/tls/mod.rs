//! TLS for `secureClientPort`, configured with ZooKeeper's own keys:
//! `ssl.keyStore.location` / `ssl.keyStore.password` / `ssl.keyStore.type` (JKS, or PEM holding
//! the key and its chain), `ssl.trustStore.*` and `ssl.clientAuth`.
//!
//! Client certificates: `ssl.clientAuth=need` or `want` verifies them against the trust store
//! (X.509 v3 certificates only, as webpki requires). ZooKeeper's default is `need`; zoo's is
//! `none` until a trust store is given, since a missing or v1 client certificate would
//! otherwise fail every handshake (docs/CONFORMANCE.md).

pub mod jks;

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::config::Config;

fn key(config: &Config, name: &str) -> Option<String> {
    config.raw.get(name).map(|v| v.trim().to_owned())
}

/// The TLS server configuration, or `None` when `secureClientPort` is not set.
pub fn server_config(config: &Config) -> Result<Option<Arc<rustls::ServerConfig>>, String> {
    if key(config, "secureClientPort").is_none() {
        return Ok(None);
    }
    let location = key(config, "ssl.keyStore.location")
        .ok_or("secureClientPort needs ssl.keyStore.location")?;
    let password = key(config, "ssl.keyStore.password").unwrap_or_default();
    let kind = key(config, "ssl.keyStore.type").unwrap_or_else(|| {
        if location.ends_with(".pem") {
            "PEM".into()
        } else {
            "JKS".into()
        }
    });
    let bytes =
        std::fs::read(&location).map_err(|e| format!("cannot read keystore {location}: {e}"))?;
    let (key_der, chain) = match kind.to_ascii_uppercase().as_str() {
        "JKS" => {
            let store = jks::parse(&bytes, &password).map_err(|e| format!("{location}: {e}"))?;
            let (key, chain) = store
                .keys
                .into_iter()
                .next()
                .ok_or_else(|| format!("{location} holds no private key"))?;
            (
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
                chain
                    .into_iter()
                    .map(CertificateDer::from)
                    .collect::<Vec<_>>(),
            )
        }
        "PEM" => {
            use rustls::pki_types::pem::PemObject;
            let key = PrivateKeyDer::from_pem_slice(&bytes)
                .map_err(|e| format!("{location}: no private key: {e}"))?;
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{location}: {e}"))?;
            (key, chain)
        }
        other => {
            return Err(format!(
                "ssl.keyStore.type {other} is not supported (JKS or PEM)"
            ));
        }
    };
    if chain.is_empty() {
        return Err(format!("{location} holds no certificate"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let client_auth = key(config, "ssl.clientAuth").unwrap_or_else(|| "none".into());
    let builder = match client_auth.to_ascii_lowercase().as_str() {
        "none" => builder.with_no_client_auth(),
        mode @ ("need" | "want") => {
            let location = key(config, "ssl.trustStore.location")
                .ok_or("ssl.clientAuth needs ssl.trustStore.location")?;
            let password = key(config, "ssl.trustStore.password").unwrap_or_default();
            let bytes = std::fs::read(&location)
                .map_err(|e| format!("cannot read trust store {location}: {e}"))?;
            let store = jks::parse(&bytes, &password).map_err(|e| format!("{location}: {e}"))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in store.trusted {
                roots
                    .add(CertificateDer::from(cert))
                    .map_err(|e| format!("{location}: {e}"))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            );
            let verifier = if mode == "want" {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| format!("TLS client auth: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        other => {
            return Err(format!(
                "ssl.clientAuth={other}: expected need, want or none"
            ));
        }
    };
    // Not `with_single_cert`: that re-parses the certificate with webpki, which refuses
    // X.509 v1 certificates that Java (and ZooKeeper's users) happily serve.
    let signing_key = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| format!("{location}: {e}"))?;
    let certified = Arc::new(rustls::sign::CertifiedKey::new(chain, signing_key));
    let server = builder.with_cert_resolver(Arc::new(OneCertificate(certified)));
    Ok(Some(Arc::new(server)))
}

/// Serves the keystore's certificate to every client.
#[derive(Debug)]
struct OneCertificate(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for OneCertificate {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

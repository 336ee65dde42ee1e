//! The API's TLS settings: a certificate chain and its private key (PEM files) as a rustls server
//! configuration (ring provider, TLS 1.2 and 1.3), each file's problem named.

use std::path::Path;
use std::sync::Arc;

use axum_server::tls_rustls::RustlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Result, ServeError};

fn bad(path: &Path, message: String) -> ServeError {
    ServeError::Config {
        field: format!("TLS file {}", path.display()),
        message,
    }
}

/// The server configuration of `cert` (a PEM chain, leaf first) and `key` (its PEM private key).
pub fn server_config(cert: &Path, key: &Path) -> Result<RustlsConfig> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, e.to_string()))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(cert, "no PEM certificate in it".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| bad(key, format!("does not fit the certificate: {e}")))?;
    Ok(RustlsConfig::from_config(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, "not a certificate\n").expect("write");
        std::fs::write(&key, "not a key\n").expect("write");
        let e = server_config(&cert, &key)
            .expect_err("no certificate")
            .to_string();
        assert!(e.contains("cert.pem"), "{e}");
        let e = server_config(&dir.path().join("absent.pem"), &key)
            .expect_err("absent")
            .to_string();
        assert!(e.contains("absent.pem"), "{e}");
    }
}

//! Certificates and keys, read when the configuration is loaded (by the
//! master, which may read root-only key files), checked so that a missing
//! file, an unreadable PEM or a key that does not match its certificate is
//! a `corral -t` error.

use std::path::Path;
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A PEM file holding an encrypted private key (PKCS#8 or OpenSSL's
/// traditional `Proc-Type: 4,ENCRYPTED`), which no key parser takes.
fn is_encrypted(key: &Path) -> bool {
    std::fs::read(key).is_ok_and(|b| {
        let t = String::from_utf8_lossy(&b);
        t.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") || t.contains("Proc-Type: 4,ENCRYPTED")
    })
}

/// Reads a PEM chain (leaf first), its private key (PKCS#8, PKCS#1 RSA or
/// SEC1 EC) and optionally a DER OCSP response to staple.
pub fn load(cert: &Path, key: &Path, ocsp: Option<&Path>) -> Result<Arc<CertifiedKey>, String> {
    let chain = read_chain(cert)?;
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound if is_encrypted(key) => format!(
            "{}: the private key is encrypted, and corral asks no pass phrase: decrypt it \
             (openssl pkey -in KEY -out PLAIN) and keep the file readable by root only",
            key.display()
        ),
        rustls_pki_types::pem::Error::NoItemsFound => format!("{}: no private key found", key.display()),
        e => format!("{}: {}", key.display(), pem_error(e)),
    })?;
    let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(&der)
        .map_err(|e| format!("{}: unsupported private key ({e})", key.display()))?;
    let mut ck = CertifiedKey::new(chain, signer);
    ck.keys_match().map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "the key in {} does not match the certificate in {}",
            key.display(),
            cert.display()
        ),
        e => format!("{}: the certificate cannot be used ({e})", cert.display()),
    })?;
    if let Some(p) = ocsp {
        let bytes = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
        // A DER SEQUENCE; anything else would be stapled as garbage.
        if bytes.first() != Some(&0x30) {
            return Err(format!("{}: not a DER OCSP response", p.display()));
        }
        ck.ocsp = Some(bytes);
    }
    Ok(Arc::new(ck))
}

fn read_chain(cert: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let iter = CertificateDer::pem_file_iter(cert).map_err(|e| format!("{}: {}", cert.display(), pem_error(e)))?;
    let chain = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {}", cert.display(), pem_error(e)))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate found", cert.display()));
    }
    Ok(chain)
}

fn pem_error(e: rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(e) => e.to_string(),
        e => format!("not a valid PEM file ({e:?})"),
    }
}

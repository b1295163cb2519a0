//! A server's TLS keys: certificates, keys, OCSP responses, protocols and
//! session tickets, read and checked at load.

use std::time::Duration;

use super::Tls;
use super::load::{Checker, ConfigError};
use super::raw::{self, OneOrMany};

/// The TLS settings of one `[[server]]`; `None` without `certificate`.
pub(super) fn build(c: &Checker<'_>, s: &mut raw::Server) -> Result<Option<Tls>, ConfigError> {
    let certs = s.certificate.take().map(OneOrMany::into_vec).unwrap_or_default();
    let keys = s.certificate_key.take().map(OneOrMany::into_vec).unwrap_or_default();
    let ocsp = s.ocsp_staple.take().map(OneOrMany::into_vec).unwrap_or_default();
    let protocols = s.tls_protocols.take().map(OneOrMany::into_vec);
    let tickets = s.tls_session_tickets.take();
    let timeout = s.tls_session_timeout.take();
    if certs.is_empty() {
        for (key, set) in [
            ("certificate_key", !keys.is_empty()),
            ("ocsp_staple", !ocsp.is_empty()),
            ("tls_protocols", protocols.is_some()),
            ("tls_session_tickets", tickets.is_some()),
            ("tls_session_timeout", timeout.is_some()),
        ] {
            if set {
                return Err(c.err(key, "needs `certificate` in the same server"));
            }
        }
        return Ok(None);
    }
    if keys.len() != certs.len() {
        return Err(c.err(
            "certificate_key",
            format!(
                "{} certificate(s) but {} key(s): give one key per certificate, in the same order",
                certs.len(),
                keys.len()
            ),
        ));
    }
    if !ocsp.is_empty() && ocsp.len() != certs.len() {
        return Err(c.err(
            "ocsp_staple",
            "give one OCSP response file per certificate, in the same order",
        ));
    }
    let mut loaded = Vec::with_capacity(certs.len());
    for (i, (cert, key)) in certs.iter().zip(&keys).enumerate() {
        let ocsp = ocsp.get(i).map(|p| c.src.path(p));
        let pair = crate::tls::certs::load(&c.src.path(cert), &c.src.path(key), ocsp.as_deref());
        if let Ok(ck) = &pair {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            if let Some(w) = crate::tls::validity::warning(&c.src.path(cert), &ck.cert[0], now) {
                crate::warn!("{}", c.err("certificate", w));
            }
        }
        loaded.push(pair.map_err(|e| {
            let key = if e.contains("does not match") || e.starts_with(&c.src.path(key).display().to_string()) {
                "certificate_key"
            } else if ocsp.as_ref().is_some_and(|o| e.starts_with(&o.display().to_string())) {
                "ocsp_staple"
            } else {
                "certificate"
            };
            c.err(key, e)
        })?);
    }
    let (mut tls12, mut tls13) = (true, true);
    if let Some(list) = protocols {
        (tls12, tls13) = (false, false);
        for p in &list {
            match p.as_str() {
                "TLSv1.2" => tls12 = true,
                "TLSv1.3" => tls13 = true,
                "SSLv2" | "SSLv3" | "TLSv1" | "TLSv1.1" => {
                    return Err(c.err(
                        "tls_protocols",
                        format!("{p} is not supported (broken; corral speaks TLSv1.2 and TLSv1.3)"),
                    ));
                }
                other => {
                    return Err(c.err(
                        "tls_protocols",
                        format!("unknown protocol \"{other}\", expected \"TLSv1.2\" or \"TLSv1.3\""),
                    ));
                }
            }
        }
        if !tls12 && !tls13 {
            return Err(c.err("tls_protocols", "needs at least one protocol"));
        }
    }
    let session_timeout = c.duration("tls_session_timeout", timeout, Duration::from_secs(3600))?;
    if session_timeout < Duration::from_secs(1) {
        return Err(c.err("tls_session_timeout", "at least 1s"));
    }
    Ok(Some(Tls {
        certs: loaded,
        tls12,
        tls13,
        session_tickets: tickets.unwrap_or(true),
        session_timeout,
    }))
}

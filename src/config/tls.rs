//! TLS keys: certificates, keys, OCSP responses, protocols and session
//! tickets, read and checked at load. `[http]` may hold them all as
//! defaults for every server (nginx's `ssl_*` at `http` level); a server's
//! own keys win.

use std::sync::Arc;
use std::time::Duration;

use rustls::sign::CertifiedKey;

use super::Tls;
use super::load::{Checker, ConfigError};
use super::raw::{NumOrStr, OneOrMany};

/// The TLS keys of one table, as written.
pub(super) struct Keys {
    pub certificate: Option<OneOrMany>,
    pub certificate_key: Option<OneOrMany>,
    pub ocsp_staple: Option<OneOrMany>,
    pub tls_protocols: Option<OneOrMany>,
    pub tls_session_tickets: Option<bool>,
    pub tls_session_timeout: Option<NumOrStr>,
}

/// What `[http]` gives every server.
#[derive(Default)]
pub(super) struct Defaults {
    certs: Vec<Arc<CertifiedKey>>,
    protocols: Option<(bool, bool)>,
    tickets: Option<bool>,
    timeout: Option<Duration>,
}

/// `[http]`'s TLS keys.
pub(super) fn defaults(c: &Checker<'_>, k: Keys) -> Result<Defaults, ConfigError> {
    let certs = load_certs(c, k.certificate, k.certificate_key, k.ocsp_staple)?;
    Ok(Defaults {
        certs,
        protocols: k.tls_protocols.map(|p| protocols(c, p)).transpose()?,
        tickets: k.tls_session_tickets,
        timeout: k.tls_session_timeout.map(|t| timeout(c, t)).transpose()?,
    })
}

/// A server's TLS settings; `None` when neither it nor `[http]` has a
/// `certificate`.
pub(super) fn build(c: &Checker<'_>, k: Keys, d: &Defaults) -> Result<Option<Tls>, ConfigError> {
    let own = k.certificate.is_some();
    let certs = load_certs(c, k.certificate, k.certificate_key, k.ocsp_staple)?;
    let certs = if own { certs } else { d.certs.clone() };
    if certs.is_empty() {
        for (key, set) in [
            ("tls_protocols", k.tls_protocols.is_some()),
            ("tls_session_tickets", k.tls_session_tickets.is_some()),
            ("tls_session_timeout", k.tls_session_timeout.is_some()),
        ] {
            if set {
                return Err(c.err(key, "needs `certificate` in this server or in [http]"));
            }
        }
        return Ok(None);
    }
    let (tls12, tls13) = match k.tls_protocols {
        Some(p) => protocols(c, p)?,
        None => d.protocols.unwrap_or((true, true)),
    };
    let session_timeout = match k.tls_session_timeout {
        Some(t) => timeout(c, t)?,
        None => d.timeout.unwrap_or(Duration::from_secs(3600)),
    };
    Ok(Some(Tls {
        certs,
        tls12,
        tls13,
        session_tickets: k.tls_session_tickets.or(d.tickets).unwrap_or(true),
        session_timeout,
    }))
}

/// Certificates with their keys (and OCSP responses), one key per
/// certificate in the same order.
fn load_certs(
    c: &Checker<'_>,
    certs: Option<OneOrMany>,
    keys: Option<OneOrMany>,
    ocsp: Option<OneOrMany>,
) -> Result<Vec<Arc<CertifiedKey>>, ConfigError> {
    let certs = certs.map(OneOrMany::into_vec).unwrap_or_default();
    let keys = keys.map(OneOrMany::into_vec).unwrap_or_default();
    let ocsp = ocsp.map(OneOrMany::into_vec).unwrap_or_default();
    if certs.is_empty() {
        if !keys.is_empty() {
            return Err(c.err("certificate_key", "needs `certificate` beside it"));
        }
        if !ocsp.is_empty() {
            return Err(c.err("ocsp_staple", "needs `certificate` beside it"));
        }
        return Ok(Vec::new());
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
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut loaded = Vec::with_capacity(certs.len());
    for (i, (cert, key)) in certs.iter().zip(&keys).enumerate() {
        let (cert, key) = (c.src.path(cert), c.src.path(key));
        let ocsp = ocsp.get(i).map(|p| c.src.path(p));
        let pair = crate::tls::certs::load(&cert, &key, ocsp.as_deref()).map_err(|e| {
            let at = if e.contains("does not match") || e.starts_with(&key.display().to_string()) {
                "certificate_key"
            } else if ocsp.as_ref().is_some_and(|o| e.starts_with(&o.display().to_string())) {
                "ocsp_staple"
            } else {
                "certificate"
            };
            c.err(at, e)
        })?;
        if let Some(w) = crate::tls::validity::warning(&cert, &pair.cert[0], now) {
            crate::warn!("{}", c.err("certificate", w));
        }
        loaded.push(pair);
    }
    Ok(loaded)
}

/// `["TLSv1.2", "TLSv1.3"]` as (TLS 1.2, TLS 1.3) allowed.
fn protocols(c: &Checker<'_>, list: OneOrMany) -> Result<(bool, bool), ConfigError> {
    let (mut tls12, mut tls13) = (false, false);
    for p in &list.into_vec() {
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
    Ok((tls12, tls13))
}

fn timeout(c: &Checker<'_>, t: NumOrStr) -> Result<Duration, ConfigError> {
    let d = c.duration("tls_session_timeout", Some(t), Duration::from_secs(3600))?;
    if d < Duration::from_secs(1) {
        return Err(c.err("tls_session_timeout", "at least 1s"));
    }
    Ok(d)
}

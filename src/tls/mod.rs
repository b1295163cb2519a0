//! TLS (HTTPS) with rustls, as a layer under the HTTP connection.
//!
//! rustls is sans-I/O: the worker's event loop reads and writes the
//! socket, and a [`Session`] turns those bytes into plaintext and back, so
//! a TLS connection is the same connection state machine in every event
//! mode, accept mode and thread count. The crypto provider is aws-lc-rs:
//! its P-256, X25519 and AES-GCM code is the assembly OpenSSL's comes
//! from, the fastest rustls can use (handshakes and bulk alike), and it
//! builds with a C compiler alone.
//!
//! - [`certs`]: chains and keys, read and checked at config load;
//! - [`tickets`]: session ticket keys every worker of a master shares;
//! - this module: per listening address, the `ServerConfig` of each server,
//!   chosen by the ClientHello's SNI.

pub mod certs;
mod session;
pub mod tickets;
pub mod validity;

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

pub use session::Session;

use crate::config::server_name::Names;
use crate::config::{Config, Tls};

/// The TLS side of one listening address: which server's settings a
/// handshake gets, by the name the client asks for (SNI), with
/// `server_name`'s rules; no name or an unknown one gets the address's
/// default server.
pub struct Endpoint {
    names: Names,
    /// By server number; `None` for servers not on this address.
    configs: Vec<Option<Arc<ServerConfig>>>,
}

impl Endpoint {
    fn config_for(&self, sni: Option<&str>) -> Arc<ServerConfig> {
        let (server, _) = self.names.select(sni);
        match self.configs.get(server) {
            Some(Some(c)) => c.clone(),
            // Config checks make every server on a TLS address have one.
            _ => self.configs.iter().flatten().next().expect("a TLS server").clone(),
        }
    }
}

/// Per listening address (in `Config::listen_addrs` order), its endpoint
/// if it is a TLS address. Built in each worker.
pub fn endpoints(cfg: &Config) -> Vec<Option<Arc<Endpoint>>> {
    let per_server: Vec<Option<Arc<ServerConfig>>> = cfg
        .servers
        .iter()
        .map(|s| {
            let on_tls = s.listen.iter().any(|a| cfg.is_tls(a));
            s.tls.as_ref().filter(|_| on_tls).map(|t| server_config(t, &label(s)))
        })
        .collect();
    cfg.listen_addrs()
        .iter()
        .zip(cfg.names_by_address())
        .map(|(addr, names)| {
            cfg.is_tls(addr).then(|| {
                let configs = cfg
                    .servers
                    .iter()
                    .zip(&per_server)
                    .map(|(s, c)| c.clone().filter(|_| s.listen.contains(addr)))
                    .collect();
                Arc::new(Endpoint { names, configs })
            })
        })
        .collect()
}

/// What tells servers apart for their ticket keys.
fn label(s: &crate::config::Server) -> String {
    let addrs: Vec<String> = s.listen.iter().map(ToString::to_string).collect();
    format!("{}|{}", s.server_name.join(","), addrs.join(","))
}

fn server_config(t: &Tls, label: &str) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    if t.tls13 {
        versions.push(&rustls::version::TLS13);
    }
    if t.tls12 {
        versions.push(&rustls::version::TLS12);
    }
    let mut c = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .expect("the provider supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(BySignature(t.certs.clone())));
    // Room for "h2" later: ALPN picks from this list in order.
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    if t.session_tickets {
        let secs = t.session_timeout.as_secs().clamp(1, u64::from(u32::MAX)) as u32;
        c.ticketer = Arc::new(tickets::Ticketer::new(label, secs));
        c.send_tls13_tickets = 1;
    } else {
        c.send_tls13_tickets = 0;
    }
    // TLS 1.2 clients without tickets resume from this worker's cache.
    c.session_storage = rustls::server::ServerSessionMemoryCache::new(1024);
    Arc::new(c)
}

/// A server's certificates (for example RSA and ECDSA): the first whose key
/// can sign with a scheme the client offers.
#[derive(Debug)]
struct BySignature(Vec<Arc<CertifiedKey>>);

impl ResolvesServerCert for BySignature {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let schemes = hello.signature_schemes();
        self.0
            .iter()
            .find(|ck| ck.key.choose_scheme(schemes).is_some())
            .or(self.0.first())
            .cloned()
    }
}

/// Entry points for the fuzz targets (not part of the API).
#[doc(hidden)]
pub mod fuzz_api {
    use std::io::{ErrorKind, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::Arc;

    use super::{Endpoint, Session};

    thread_local! {
        static SETUP: (TcpListener, Arc<Endpoint>) = setup();
    }

    fn setup() -> (TcpListener, Arc<Endpoint>) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fixtures");
        let ck = super::certs::load(&dir.join("tls.pem"), &dir.join("tls.key"), None).expect("fixture");
        let tls = crate::config::Tls {
            certs: vec![ck],
            tls12: true,
            tls13: true,
            session_tickets: true,
            session_timeout: std::time::Duration::from_secs(60),
        };
        let names = crate::config::server_name::Names::new(vec![(0, Vec::new())], Some(0));
        let ep = Endpoint {
            names,
            configs: vec![Some(super::server_config(&tls, "fuzz"))],
        };
        (TcpListener::bind("127.0.0.1:0").expect("loopback"), Arc::new(ep))
    }

    /// `data` as everything a client sends to a TLS port (then its FIN):
    /// the session must end in plaintext, an end or an error, never a panic
    /// or a loop.
    pub fn client_bytes(data: &[u8]) {
        SETUP.with(|(listener, ep)| {
            let Ok(client) = TcpStream::connect(listener.local_addr().expect("bound")) else {
                return;
            };
            let Ok((server, peer)) = listener.accept() else { return };
            let _ = (&client).write_all(data);
            let _ = client.shutdown(Shutdown::Write);
            let _ = server.set_nonblocking(true);
            let mut s = Session::new(ep.clone(), peer.ip());
            let mut buf = [0u8; 4096];
            let mut idle = 0;
            for _ in 0..10_000 {
                match s.read(&server, &mut buf) {
                    Ok(0) => break,
                    Ok(_) => {
                        if s.is_secure() {
                            let _ = s.write(&server, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        // The rest is on its way over loopback.
                        idle += 1;
                        if idle > 200 {
                            break;
                        }
                        std::thread::yield_now();
                    }
                    Err(_) => break,
                }
            }
            s.close_notify(&server);
        });
    }
}

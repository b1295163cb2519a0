#![no_main]

use libfuzzer_sys::fuzz_target;

// Whatever a client sends to a TLS port: the first-byte sniff (TLS or plain
// HTTP), the ClientHello and SNI choice, records, all through corral's
// session driving rustls over a real loopback socket.
fuzz_target!(|data: &[u8]| corral::tls::fuzz_api::client_bytes(data));

#![no_main]
//! A `direct` pool's preload library following a program's streams: the
//! web server's records in pieces of any size, and the same bytes as the
//! program's answer. Nothing panics; a request handed over to the pool
//! worker is that request's records, whole (see `fuzz_api::direct_watch`).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| corral::pool::fuzz_api::direct_watch(data));

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| corral::http::fuzz_api::fastcgi_stream(data));

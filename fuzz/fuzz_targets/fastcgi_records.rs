#![no_main]

use fastcgi_codec::{HEADER_LEN, Pairs, Record, decode};
use libfuzzer_sys::fuzz_target;

// Decodes records one after another as a peer's byte stream, and the
// name-value pairs of every PARAMS / GET_VALUES body; a record's size never
// exceeds what was given, and a strict prefix of a record is never complete.
fuzz_target!(|data: &[u8]| {
    let mut at = 0;
    while let Ok(Some((rec, used))) = decode(&data[at..]) {
        assert!(used >= HEADER_LEN && at + used <= data.len());
        assert_eq!(decode(&data[at..at + used - 1]), Ok(None));
        if let Record::Params { data: body, .. } | Record::GetValues { data: body } = rec {
            for pair in Pairs::new(body) {
                if let Ok((n, v)) = pair {
                    assert!(n.len() + v.len() <= body.len());
                }
            }
        }
        at += used;
    }
});

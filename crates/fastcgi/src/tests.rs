use proptest::prelude::*;

use super::*;

/// Decodes every record of `buf`, checking each strict prefix is "more".
fn decode_all(buf: &[u8]) -> Vec<Record<'_>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let (rec, used) = decode(&buf[at..]).unwrap().expect("a whole record");
        for cut in [0, 1, HEADER_LEN - 1, HEADER_LEN, used - 1] {
            if cut < used {
                assert_eq!(
                    decode(&buf[at..at + cut]),
                    Ok(None),
                    "a prefix of {cut} bytes is not complete"
                );
            }
        }
        out.push(rec);
        at += used;
    }
    out
}

#[test]
fn a_request_and_its_response() {
    let mut b = Vec::new();
    begin_request(&mut b, 1, Role::Responder, true);
    let mut params = Vec::new();
    encode_pair(&mut params, b"SCRIPT_FILENAME", b"/srv/index.php");
    encode_pair(&mut params, b"QUERY_STRING", b"");
    stream(&mut b, kind::PARAMS, 1, &params);
    end_stream(&mut b, kind::PARAMS, 1);
    end_stream(&mut b, kind::STDIN, 1);
    assert_eq!(b.len() % 8, 0, "records are padded to 8 bytes");
    let recs = decode_all(&b);
    assert_eq!(
        recs[0],
        Record::BeginRequest {
            id: 1,
            role: Role::Responder,
            keep_conn: true
        }
    );
    let Record::Params { id: 1, data } = recs[1] else {
        panic!("{:?}", recs[1])
    };
    let pairs: Vec<_> = Pairs::new(data).map(Result::unwrap).collect();
    assert_eq!(
        pairs,
        [
            (&b"SCRIPT_FILENAME"[..], &b"/srv/index.php"[..]),
            (b"QUERY_STRING", b"")
        ]
    );
    assert_eq!(recs[2], Record::Params { id: 1, data: b"" });
    assert_eq!(recs[3], Record::Stdin { id: 1, data: b"" });

    let mut r = Vec::new();
    stream(&mut r, kind::STDOUT, 1, b"Status: 200\r\n\r\nhi");
    stream(&mut r, kind::STDERR, 1, b"notice");
    end_stream(&mut r, kind::STDOUT, 1);
    end_request(&mut r, 1, 0, ProtocolStatus::RequestComplete);
    let recs = decode_all(&r);
    assert_eq!(
        recs.last(),
        Some(&Record::EndRequest {
            id: 1,
            app_status: 0,
            protocol_status: ProtocolStatus::RequestComplete
        })
    );
}

#[test]
fn management_records_and_unknown_types() {
    let mut b = Vec::new();
    get_values(&mut b, &["FCGI_MAX_CONNS", "FCGI_MPXS_CONNS"]);
    get_values_result(&mut b, &[("FCGI_MPXS_CONNS", "0")]);
    unknown_type(&mut b, 99);
    abort_request(&mut b, 7);
    // A type from the future is not an error: the responder answers UNKNOWN_TYPE.
    b.extend_from_slice(&[1, 42, 0, 7, 0, 2, 6, 0, b'h', b'i', 0, 0, 0, 0, 0, 0]);
    let recs = decode_all(&b);
    let Record::GetValues { data } = recs[0] else { panic!() };
    let names: Vec<_> = Pairs::new(data).map(|p| p.unwrap().0).collect();
    assert_eq!(names, [&b"FCGI_MAX_CONNS"[..], b"FCGI_MPXS_CONNS"]);
    assert!(matches!(recs[1], Record::GetValuesResult { .. }));
    assert_eq!(recs[2], Record::UnknownType { kind: 99 });
    assert_eq!(recs[3], Record::AbortRequest { id: 7 });
    assert_eq!(
        recs[4],
        Record::Unknown {
            kind: 42,
            id: 7,
            data: b"hi"
        }
    );
}

#[test]
fn malformed_input_is_an_error() {
    assert_eq!(decode(&[2, 1, 0, 1, 0, 8, 0, 0]), Err(Error::Version(2)));
    let short_begin = [1, kind::BEGIN_REQUEST, 0, 1, 0, 2, 0, 0, 0, 1];
    assert_eq!(decode(&short_begin), Err(Error::Length { kind: 1, len: 2 }));
    let begin_null = [1, kind::BEGIN_REQUEST, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    assert_eq!(decode(&begin_null), Err(Error::RequestId { kind: 1, id: 0 }));
    let stdin_null = [1, kind::STDIN, 0, 0, 0, 0, 0, 0];
    assert!(decode(&stdin_null).is_err());
    // A pair whose 4-byte length claims more than there is.
    let mut p = Vec::new();
    p.extend_from_slice(&[0x80, 0, 1, 0, 1, b'x']);
    let got: Vec<_> = Pairs::new(&p).collect();
    assert_eq!(got, [Err(Error::Pair)]);
    assert_eq!(
        Pairs::new(&[0x85]).next(),
        Some(Err(Error::Pair)),
        "a truncated 4-byte length"
    );
}

#[test]
fn params_larger_than_a_record() {
    let big = vec![b'v'; 200_000];
    let mut params = Vec::new();
    encode_pair(&mut params, b"HTTP_COOKIE", &big);
    let mut b = Vec::new();
    stream(&mut b, kind::PARAMS, 3, &params);
    end_stream(&mut b, kind::PARAMS, 3);
    let mut body = Vec::new();
    for rec in decode_all(&b) {
        let Record::Params { data, .. } = rec else { panic!() };
        assert!(data.len() <= MAX_CONTENT);
        body.extend_from_slice(data);
    }
    let pairs: Vec<_> = Pairs::new(&body).map(Result::unwrap).collect();
    assert_eq!(pairs, [(&b"HTTP_COOKIE"[..], &big[..])]);
}

proptest! {
    /// `params` keeps every pair that fits in one record whole in one
    /// record (PHP decodes record by record), and loses no byte.
    #[test]
    fn params_records_hold_whole_pairs(sizes in prop::collection::vec(0usize..70_000, 0..12)) {
        let mut body = Vec::new();
        let mut bounds = vec![0];
        for (i, n) in sizes.iter().enumerate() {
            encode_pair(&mut body, format!("N{i}").as_bytes(), &vec![b'v'; *n]);
            bounds.push(body.len());
        }
        let mut b = Vec::new();
        params(&mut b, 1, &body);
        end_stream(&mut b, kind::PARAMS, 1);
        let mut joined = Vec::new();
        for rec in decode_all(&b) {
            let Record::Params { data, .. } = rec else { panic!() };
            prop_assert!(data.len() <= MAX_CONTENT);
            joined.extend_from_slice(data);
            // Every record ends at a pair boundary unless a pair is larger than a record.
            let end = joined.len();
            let at_bound = bounds.contains(&end);
            let inside_big = bounds.windows(2).any(|w| w[0] < end && end < w[1] && w[1] - w[0] > MAX_CONTENT);
            prop_assert!(at_bound || inside_big, "a record ends inside a small pair at {}", end);
        }
        prop_assert_eq!(joined, body);
    }

    #[test]
    fn pairs_round_trip(pairs in prop::collection::vec(
        (prop::collection::vec(any::<u8>(), 0..300), prop::collection::vec(any::<u8>(), 0..300)), 0..20)) {
        let mut body = Vec::new();
        for (n, v) in &pairs {
            encode_pair(&mut body, n, v);
        }
        let back: Vec<(Vec<u8>, Vec<u8>)> =
            Pairs::new(&body).map(|p| p.map(|(n, v)| (n.to_vec(), v.to_vec()))).collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(back, pairs);
    }

    #[test]
    fn streams_round_trip_from_any_split(data in prop::collection::vec(any::<u8>(), 0..200_000), id in 1u16.., split in any::<prop::sample::Index>()) {
        let mut b = Vec::new();
        stream(&mut b, kind::STDOUT, id, &data);
        end_stream(&mut b, kind::STDOUT, id);
        // Bytes arriving in two pieces: decode what is there, then the rest.
        let cut = split.index(b.len() + 1);
        let mut got = Vec::new();
        let mut buf: Vec<u8> = b[..cut].to_vec();
        let mut ended = false;
        for more in [&b[cut..], &[][..]] {
            loop {
                match decode(&buf).unwrap() {
                    Some((Record::Stdout { id: rid, data }, used)) => {
                        prop_assert_eq!(rid, id);
                        if data.is_empty() { ended = true; }
                        got.extend_from_slice(data);
                        buf.drain(..used);
                    }
                    Some((other, _)) => prop_assert!(false, "{:?}", other),
                    None => break,
                }
            }
            buf.extend_from_slice(more);
        }
        prop_assert!(ended);
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, data);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(Some((_, used))) = decode(&bytes) {
            prop_assert!(used <= bytes.len() && used >= HEADER_LEN);
        }
        for p in Pairs::new(&bytes) {
            let _ = p;
        }
    }
}

#![no_main]
//! A pool worker's PARAMS from a web server: decoded, shown in the
//! scoreboard and in every status format. The checks: nothing panics, and
//! no client byte breaks a format's structure (an injected line, an
//! unescaped quote or control character).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for (query, ct, body) in corral::pool::fuzz_api::pool_params(data) {
        let text = std::str::from_utf8(&body).expect("status output is UTF-8");
        match query {
            "json&full" => {
                assert!(ct.starts_with("application/json"), "{ct}");
                serde_json::from_str::<serde_json::Value>(text).expect("valid JSON");
            }
            "openmetrics&full" | "prometheus&full" => {
                // At a pool's status_path, OpenMetrics is php-fpm's own.
                let family = if query == "prometheus&full" { "corral_" } else { "phpfpm_" };
                for line in text.lines() {
                    assert!(
                        line.starts_with("# ") || line.starts_with(family),
                        "a line of its own: {line:?}"
                    );
                    assert!(!line.chars().any(char::is_control), "{line:?}");
                }
            }
            "xml&full" => {
                assert!(ct.starts_with("text/xml"), "{ct}");
                // Every line an element: no client byte starts one or ends one.
                for line in text.lines() {
                    assert!(line.starts_with('<') && line.ends_with('>'), "{line:?}");
                    assert!(!line.chars().any(char::is_control), "{line:?}");
                }
            }
            "html&full" => assert!(ct.starts_with("text/html"), "{ct}"),
            _ => {
                // php-fpm's text: "key:   value" lines, blank lines and the
                // row of stars between processes; never a line of the client's.
                for line in text.lines() {
                    if line.is_empty() || line.starts_with("*****") {
                        continue;
                    }
                    let key = line.split(':').next().unwrap_or("");
                    assert!(
                        !key.is_empty()
                            && key.len() <= 22
                            && key
                                .bytes()
                                .all(|b| b.is_ascii_lowercase() || b == b' ' || b.is_ascii_uppercase()),
                        "a line of its own: {line:?}"
                    );
                }
            }
        }
    }
});

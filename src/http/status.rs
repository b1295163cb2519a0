//! Status codes, reason phrases and the small HTML bodies of error pages.

pub fn reason(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// The HTML body sent with an error status.
/// Whether a response with this status may carry content (not 1xx, 204, 304).
pub fn has_content(code: u16) -> bool {
    !matches!(code, 100..=199 | 204 | 304)
}

pub fn error_page(code: u16, tokens: bool) -> Vec<u8> {
    let sig = if tokens {
        concat!("corral/", env!("CARGO_PKG_VERSION"))
    } else {
        "corral"
    };
    format!(
        "<html>\r\n<head><title>{code} {r}</title></head>\r\n<body>\r\n<center><h1>{code} {r}</h1></center>\r\n<hr><center>{sig}</center>\r\n</body>\r\n</html>\r\n",
        r = reason(code)
    )
    .into_bytes()
}

/// nginx's answer to a plain HTTP request sent to a TLS port.
pub fn plain_http_page(tokens: bool) -> Vec<u8> {
    let sig = if tokens {
        concat!("corral/", env!("CARGO_PKG_VERSION"))
    } else {
        "corral"
    };
    format!(
        "<html>\r\n<head><title>400 The plain HTTP request was sent to HTTPS port</title></head>\r\n<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n<center>The plain HTTP request was sent to HTTPS port</center>\r\n<hr><center>{sig}</center>\r\n</body>\r\n</html>\r\n"
    )
    .into_bytes()
}

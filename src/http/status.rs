//! Status codes, reason phrases and the small HTML bodies of error pages.

/// The reason phrase of a status (RFC 9110 §15 and the registered
/// extensions in use); an unregistered code gets its class's phrase.
pub fn reason(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        101 => "Switching Protocols",
        102 => "Processing",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        207 => "Multi-Status",
        208 => "Already Reported",
        226 => "IM Used",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        418 => "I'm a teapot",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        423 => "Locked",
        424 => "Failed Dependency",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        511 => "Network Authentication Required",
        _ => match code / 100 {
            2 => "Success",
            3 => "Redirection",
            4 => "Client Error",
            5 => "Server Error",
            _ => "Unknown",
        },
    }
}

/// Whether a response with this status may carry content (not 1xx, 204, 304).
pub fn has_content(code: u16) -> bool {
    !matches!(code, 100..=199 | 204 | 304)
}

/// The HTML body sent with an error status.
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

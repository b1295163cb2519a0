//! Directory listings for `autoindex = true`: names HTML-escaped in the
//! text and percent-encoded in the links.

use std::fmt::Write as _;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use super::path;

pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Renders the listing of the open directory `dir`, shown as `url_path`.
pub fn render(dir: &OwnedFd, url_path: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut entries: Vec<(Vec<u8>, bool, u64, Option<std::time::SystemTime>)> = Vec::new();
    for e in std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))? {
        let e = e?;
        let name = e.file_name().as_bytes().to_vec();
        if name.first() == Some(&b'.') {
            continue;
        }
        let meta = e.metadata().ok();
        let is_dir = meta.as_ref().is_some_and(|m| m.is_dir());
        let size = meta.as_ref().map_or(0, |m| m.len());
        let mtime = meta.and_then(|m| m.modified().ok());
        entries.push((name, is_dir, size, mtime));
    }
    entries.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let title = escape_html(&String::from_utf8_lossy(url_path));
    let mut html = String::new();
    let _ = write!(
        html,
        "<html>\r\n<head><title>Index of {title}</title></head>\r\n<body>\r\n<h1>Index of {title}</h1><hr><pre><a href=\"../\">../</a>\r\n"
    );
    for (name, is_dir, size, mtime) in entries {
        // `&` would start an HTML entity; `+` and `;` read as a space or a
        // parameter to some; encoded as nginx does.
        let mut href = path::encode(&name)
            .replace('&', "%26")
            .replace('+', "%2B")
            .replace(';', "%3B");
        if name.contains(&b':') {
            // "a:b" would read as a URL scheme.
            href.insert_str(0, "./");
        }
        let mut shown = escape_html(&String::from_utf8_lossy(&name));
        if is_dir {
            href.push('/');
            shown.push('/');
        }
        let date = mtime.map(httpdate::fmt_http_date).unwrap_or_default();
        let size = if is_dir { "-".to_string() } else { size.to_string() };
        let _ = write!(html, "<a href=\"{href}\">{shown}</a>  {date}  {size}\r\n");
    }
    html.push_str("</pre><hr></body>\r\n</html>\r\n");
    Ok(html.into_bytes())
}

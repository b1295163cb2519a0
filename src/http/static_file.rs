//! Static files: confinement to the root, index files, directory
//! redirects, validators and conditional requests, byte ranges.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};

use std::sync::Arc;

use super::autoindex;
use super::file_cache::{Cached, Entry, FileCache, FileMeta, Identity};
use super::path;
use super::range::{self, Range};
use super::reply::{Reply, ReplyBody, Source};
use super::request::{Method, Request};
use crate::config;
use crate::core::log::Esc;

/// A server block as a worker holds it: its settings and an open handle on
/// its root directory, the anchor every lookup is resolved beneath.
pub struct Site {
    pub cfg: config::Server,
    /// `cfg.charset`, shared by the responses that carry it.
    charset: Option<Arc<str>>,
    /// `cfg.default_type` for files whose extension says nothing.
    default_type: &'static str,
    root: Option<OwnedFd>,
    pub cgi: Vec<super::cgi::Rule>,
}

impl Site {
    pub fn new(cfg: config::Server) -> Site {
        let root = nix::fcntl::open(
            &cfg.root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        // SAFETY: open returned a fresh descriptor that nothing else owns.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
        let root = match root {
            Ok(fd) => Some(fd),
            Err(e) => {
                crate::error!(
                    "root {} cannot be opened: {e}; every request will get 404",
                    cfg.root.display()
                );
                None
            }
        };
        let cgi = cfg.cgi.iter().cloned().map(super::cgi::Rule::new).collect();
        let charset = cfg.charset.as_deref().map(Arc::from);
        let default_type = match cfg.default_type.as_str() {
            "application/octet-stream" => "application/octet-stream",
            // Once per site for the worker's life (a reload starts new
            // workers): replies carry `&'static str` types.
            t => Box::leak(t.to_string().into_boxed_str()),
        };
        Site {
            cfg,
            charset,
            default_type,
            root,
            cgi,
        }
    }

    /// For `try_files`: `Some(true)` for a directory, `Some(false)` for a
    /// regular file, `None` if `rel` is neither (or cannot be opened).
    pub fn is_dir(&self, rel: &[u8]) -> Option<bool> {
        self.kind(rel).ok().flatten()
    }

    /// [`Site::is_dir`], with why a path cannot be opened (`EXDEV`: it
    /// leaves the root through a symlink); `Ok(None)`: neither a file nor
    /// a directory.
    pub fn kind(&self, rel: &[u8]) -> Result<Option<bool>, Errno> {
        let f = File::from(self.open(rel)?);
        let m = f
            .metadata()
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
        Ok(if m.is_dir() {
            Some(true)
        } else {
            m.is_file().then_some(false)
        })
    }

    /// Opens `rel` (no leading slash) beneath the root. Symlinks may not
    /// leave the root unless the config allows it.
    fn open(&self, rel: &[u8]) -> Result<OwnedFd, Errno> {
        let root = self.root.as_ref().ok_or(Errno::ENOENT)?;
        let rel: &[u8] = if rel.is_empty() { b"." } else { rel };
        let resolve = if self.cfg.follow_symlinks_outside_root {
            ResolveFlag::RESOLVE_NO_MAGICLINKS
        } else {
            ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS
        };
        // O_NONBLOCK: opening a FIFO must never stall the worker.
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK)
            .resolve(resolve);
        let fd = openat2(root.as_raw_fd(), rel, how)?;
        // SAFETY: openat2 returned a fresh descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

pub(super) fn errno_status(e: Errno, site: &Site, rel: &[u8]) -> u16 {
    match e {
        Errno::ENOENT | Errno::ENOTDIR | Errno::ENAMETOOLONG => 404,
        Errno::EXDEV => {
            crate::error!(
                "\"{}\" resolves outside root {}, refused",
                Esc(rel),
                site.cfg.root.display()
            );
            403
        }
        Errno::ELOOP => {
            crate::error!(
                "\"{}\" under root {}: too many levels of symbolic links (a symlink loop), refused",
                Esc(rel),
                site.cfg.root.display()
            );
            403
        }
        Errno::EACCES | Errno::EPERM => {
            // As nginx: a 403 the operator can explain (often the workers'
            // `user` cannot read the file or a directory above it).
            crate::error!(
                "open() \"{}/{}\" failed ({}: {}), answered 403",
                site.cfg.root.display(),
                Esc(rel),
                e as i32,
                e.desc()
            );
            403
        }
        Errno::EMFILE | Errno::ENFILE => {
            crate::crit!("open(\"{}\") failed: {e}", Esc(rel));
            503
        }
        _ => {
            crate::error!("open(\"{}\") failed: {e}", Esc(rel));
            500
        }
    }
}

/// What the handler needs besides the request: the site and its index,
/// the worker's file cache, and the size up to which files are cached.
pub struct Ctx<'a> {
    pub site: &'a Site,
    pub site_idx: usize,
    pub cache: &'a mut FileCache,
    pub tokens: bool,
}

impl Site {
    /// `add_header` and `expires` lines for a response with `status`, as
    /// nginx adds them: on 200, 201, 204, 206, 301, 302, 303, 304, 307 and
    /// 308, and `always` ones on every status.
    pub fn added_headers(&self, status: u16, now: i64, out: &mut String) {
        use std::fmt::Write as _;
        let ok = matches!(status, 200 | 201 | 204 | 206 | 301 | 302 | 303 | 304 | 307 | 308);
        for h in &self.cfg.add_header {
            if ok || h.always {
                let _ = write!(out, "{}: {}\r\n", h.name, h.value);
            }
        }
        let (Some(e), true) = (self.cfg.expires, ok) else {
            return;
        };
        let date = |secs: i64| httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs.max(1) as u64));
        let (expires, cc) = match e {
            config::Expires::After(d) => (date(now + d.as_secs() as i64), format!("max-age={}", d.as_secs())),
            config::Expires::NoCache(d) => (date(now - d.as_secs() as i64), "no-cache".to_string()),
            config::Expires::Epoch => (date(1), "no-cache".to_string()),
            config::Expires::Max => (date(2_145_916_555), "max-age=315360000".to_string()),
        };
        let _ = write!(out, "Expires: {expires}\r\nCache-Control: {cc}\r\n");
    }

    /// Adds the site's charset to a reply of a text type that does not
    /// name its own (the status page's types do).
    pub fn set_charset(&self, r: &mut Reply) {
        if let Some(cs) = &self.charset
            && r.content_type.is_some_and(|ct| is_text(ct) && !ct.contains("charset="))
        {
            r.charset = Some(cs.clone());
        }
    }
}

/// 301 to the decoded `path` with a slash added, the request's query kept.
pub(super) fn slash_redirect(path: &[u8], req: &Request, tokens: bool) -> Reply {
    let mut loc = path::encode(path);
    loc.push('/');
    if let Some(q) = req.query().filter(|q| !q.is_empty()) {
        loc.push('?');
        loc.push_str(q);
    }
    let mut r = Reply::error(301, tokens);
    r.location = Some(loc);
    r
}

/// Types whose bytes are text in a charset (nginx's `charset_types`, and
/// the JSON / SVG / feed types browsers otherwise guess at).
fn is_text(ct: &str) -> bool {
    ct.starts_with("text/")
        || matches!(
            ct,
            "application/javascript"
                | "application/json"
                | "application/xml"
                | "application/rss+xml"
                | "application/atom+xml"
                | "application/manifest+json"
                | "image/svg+xml"
        )
}

/// Serves `req` from the site in `ctx`.
pub fn serve(ctx: &mut Ctx<'_>, req: &Request) -> Reply {
    let tokens = ctx.tokens;
    if req.method == Method::Other {
        // As nginx: a POST is refused only where a file would be served; a
        // missing file stays a 404 and a directory's slash a 301.
        if req.method_name == "POST" {
            let r = serve_file(ctx, req);
            if !(r.status < 300 || matches!(r.status, 304 | 412 | 416)) {
                return r;
            }
        }
        let mut r = Reply::error(405, tokens);
        r.header("Allow", "GET, HEAD");
        return r;
    }
    serve_file(ctx, req)
}

/// `serve` for a method the static handler answers.
fn serve_file(ctx: &mut Ctx<'_>, req: &Request) -> Reply {
    let tokens = ctx.tokens;
    let Some(norm) = req.normalized() else {
        return Reply::fatal(400, tokens);
    };
    let norm = norm.as_ref();
    let rel = req.file.as_deref().unwrap_or(&norm[1..]);
    let site = ctx.site;
    if site.cfg.gzip_static && norm.last() != Some(&b'/') {
        for (coding, ext) in [("br", ".br"), ("gzip", ".gz")] {
            if !req.accepts(coding) {
                continue;
            }
            let mut variant = rel.to_vec();
            variant.extend_from_slice(ext.as_bytes());
            if let Some(mut r) = precompressed(site, &variant, norm, req, tokens) {
                r.header("Content-Encoding", coding);
                r.header("Vary", "Accept-Encoding");
                return r;
            }
        }
    }
    let mut r = serve_identity(ctx, req, norm, rel);
    if site.cfg.gzip_static && matches!(r.status, 200 | 206 | 304) {
        r.header("Vary", "Accept-Encoding");
    }
    r
}

/// A precompressed `file.gz` / `file.br` next to the file, served with the
/// original's type; `None` when there is no such regular file.
fn precompressed(site: &Site, rel: &[u8], norm: &[u8], req: &Request, tokens: bool) -> Option<Reply> {
    let file = File::from(site.open(rel).ok()?);
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let fm = FileMeta::new(&meta, norm, site.default_type);
    Some(respond(&fm, Source::File(Arc::new(file)), req, tokens))
}

/// The file itself (through the cache), a directory's index, or a listing.
fn serve_identity(ctx: &mut Ctx<'_>, req: &Request, norm: &[u8], rel: &[u8]) -> Reply {
    let tokens = ctx.tokens;
    let site = ctx.site;
    if norm.last() != Some(&b'/')
        && let Some(root) = site.root.as_ref()
        && let Some(e) = ctx.cache.get(ctx.site_idx, root.as_raw_fd(), rel)
    {
        let source = match &e.body {
            Cached::Bytes(b) => Source::Memory(b.clone()),
            Cached::File(f) => Source::File(f.clone()),
        };
        return respond(&e.meta, source, req, tokens);
    }
    let fd = match site.open(rel) {
        Ok(fd) => fd,
        Err(e) => return Reply::error(errno_status(e, site, rel), tokens),
    };
    let file = File::from(fd);
    let mut meta = match file.metadata() {
        Ok(m) => m,
        Err(_) => return Reply::error(500, tokens),
    };
    if meta.is_dir() {
        if norm.last() != Some(&b'/') {
            return slash_redirect(norm, req, tokens);
        }
        for index in &site.cfg.index {
            let mut p = rel.to_vec();
            p.extend_from_slice(index.as_bytes());
            match site.open(&p) {
                Ok(fd) => {
                    let f = File::from(fd);
                    match f.metadata() {
                        Ok(m) if m.is_file() => {
                            return respond(
                                &FileMeta::new(&m, index.as_bytes(), site.default_type),
                                Source::File(Arc::new(f)),
                                req,
                                tokens,
                            );
                        }
                        // An index name that is a directory: to it, with its slash (nginx).
                        Ok(m) if m.is_dir() => {
                            let mut to = norm.to_vec();
                            to.extend_from_slice(index.as_bytes());
                            return slash_redirect(&to, req, tokens);
                        }
                        _ => continue,
                    }
                }
                Err(Errno::ENOENT | Errno::ENOTDIR) => continue,
                Err(e) => return Reply::error(errno_status(e, site, &p), tokens),
            }
        }
        if site.cfg.autoindex {
            return match autoindex::render(&OwnedFd::from(file), norm) {
                Ok(html) => {
                    let mut r = Reply::error(200, tokens);
                    r.length = Some(html.len() as u64);
                    r.body = ReplyBody::Bytes(html);
                    r
                }
                Err(e) => {
                    crate::error!("autoindex of \"{}\" failed: {e}", Esc(norm));
                    Reply::error(500, tokens)
                }
            };
        }
        return Reply::error(403, tokens);
    }
    if !meta.is_file() {
        return Reply::error(403, tokens);
    }
    let mut fm = FileMeta::new(&meta, norm, site.default_type);
    if !ctx.cache.enabled() {
        return respond(&fm, Source::File(Arc::new(file)), req, tokens);
    }
    let body = if ctx.cache.fits_in_memory(fm.len) {
        let Some((settled, data)) = read_settled(&file, meta, |len| ctx.cache.fits_in_memory(len)) else {
            crate::error!("reading \"{}\" failed or the file kept changing", Esc(norm));
            return Reply::error(500, tokens);
        };
        if settled.len() != fm.len || settled.mtime() as u64 != fm.mtime {
            fm = FileMeta::new(&settled, norm, site.default_type);
        }
        meta = settled;
        Cached::Bytes(data.into())
    } else {
        Cached::File(Arc::new(file))
    };
    let source = match &body {
        Cached::Bytes(b) => Source::Memory(b.clone()),
        Cached::File(f) => Source::File(f.clone()),
    };
    let reply = respond(&fm, source, req, tokens);
    let entry = Entry {
        id: Identity::of_meta(&meta),
        checked: ctx.cache.turn(),
        body,
        meta: fm,
    };
    ctx.cache.insert(ctx.site_idx, rel, entry);
    reply
}

/// The whole of a small file as one version of it: read, then checked
/// unchanged (a file rewritten in place can be caught half written, or
/// empty between truncation and write). A few tries, while it stays within
/// `fits`; its metadata and bytes.
fn read_settled(
    file: &File,
    mut meta: std::fs::Metadata,
    fits: impl Fn(u64) -> bool,
) -> Option<(std::fs::Metadata, Vec<u8>)> {
    use std::os::unix::fs::FileExt;
    for _ in 0..3 {
        let mut data = vec![0; meta.len() as usize];
        let read = file.read_exact_at(&mut data, 0);
        let now = file.metadata().ok()?;
        if read.is_ok() && Identity::of_meta(&now) == Identity::of_meta(&meta) {
            return Some((meta, data));
        }
        if !fits(now.len()) {
            return None;
        }
        meta = now;
    }
    None
}

/// A file's validators and type.
impl FileMeta {
    fn new(m: &std::fs::Metadata, name: &[u8], default_type: &'static str) -> FileMeta {
        let len = m.len();
        let mtime = m.mtime().max(0) as u64;
        let name = String::from_utf8_lossy(name);
        let etag = format!("\"{mtime:x}-{len:x}\"");
        let last_modified = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(mtime));
        FileMeta {
            len,
            mtime,
            headers: format!("Last-Modified: {last_modified}\r\nETag: {etag}\r\nAccept-Ranges: bytes\r\n").into(),
            etag: etag.into(),
            last_modified: last_modified.into(),
            ctype: mime_guess::from_path(name.as_ref()).first_raw().unwrap_or(default_type),
        }
    }
}

/// Preconditions, ranges and the response for one file.
fn respond(fm: &FileMeta, source: Source, req: &Request, tokens: bool) -> Reply {
    let (len, mtime, etag) = (fm.len, fm.mtime, &*fm.etag);
    let validators = |r: &mut Reply| {
        r.header("Last-Modified", &fm.last_modified);
        r.header("ETag", etag);
    };

    // An error_page is the answer to an error: the client's preconditions
    // and ranges were about what it asked for, not this page (RFC 9110
    // §13.2.1: preconditions are ignored when the answer is an error).
    let page = req.error_status.is_some();
    match if page { None } else { precondition(req, etag, mtime) } {
        None => {}
        Some(Precondition::Failed) => return Reply::error(412, tokens),
        Some(Precondition::NotModified) => {
            let mut r = Reply::error(304, tokens);
            r.content_type = None;
            r.length = None;
            r.body = ReplyBody::Empty;
            validators(&mut r);
            return r;
        }
    }

    let mut rng = match &req.range {
        Some(h) if req.method == Method::Get && !page => range::parse(h, len),
        _ => Range::Full,
    };
    if rng != Range::Full
        && let Some(ir) = &req.if_range
    {
        let ok = if ir.starts_with('"') || ir.starts_with("W/") {
            ir == etag
        } else {
            parse_date(ir) == Some(mtime)
        };
        if !ok {
            rng = Range::Full;
        }
    }
    let mut r = Reply {
        status: 200,
        content_type: Some(fm.ctype),
        charset: None,
        length: Some(len),
        location: None,
        extra: String::new(),
        shared: Some(fm.headers.clone()),
        body: ReplyBody::Empty,
        close: false,
        own_body: false,
    };
    let (offset, count) = match rng {
        Range::Full => (0, len),
        Range::Part { start, end } => {
            r.status = 206;
            r.header("Content-Range", format_args!("bytes {start}-{end}/{len}"));
            (start, end - start + 1)
        }
        Range::Parts(ranges) => {
            // The multipart body is made once the headers are final (its
            // parts carry the Content-Type, charset included).
            r.status = 206;
            r.body = ReplyBody::Ranges {
                src: source,
                ranges,
                len,
            };
            return r;
        }
        Range::Unsatisfiable => {
            let mut e = Reply::error(416, tokens);
            e.header("Content-Range", format_args!("bytes */{len}"));
            return e;
        }
    };
    r.length = Some(count);
    // A HEAD carries the body too (never sent): filters after this one
    // (gzip) then give it the same head as the GET.
    if count > 0 {
        r.body = match source {
            Source::File(file) => ReplyBody::File {
                file,
                offset,
                len: count,
            },
            Source::Memory(data) => ReplyBody::Shared {
                data,
                offset: offset as usize,
                len: count as usize,
            },
        };
    }
    r
}

/// What the request's preconditions say of the file, in the order of
/// RFC 9110 §13.2.2; `None`: serve it.
enum Precondition {
    /// 412: If-Match, else If-Unmodified-Since, failed.
    Failed,
    /// 304: If-None-Match, else If-Modified-Since, matched.
    NotModified,
}

fn precondition(req: &Request, etag: &str, mtime: u64) -> Option<Precondition> {
    if let Some(im) = &req.if_match {
        if !etag_list_matches(im, etag, true) {
            return Some(Precondition::Failed);
        }
    } else if let Some(ius) = req.if_unmodified_since.as_deref().and_then(parse_date)
        && mtime > ius
    {
        return Some(Precondition::Failed);
    }
    let not_modified = if let Some(inm) = &req.if_none_match {
        etag_list_matches(inm, etag, false)
    } else if let Some(ims) = req.if_modified_since.as_deref().and_then(parse_date) {
        mtime <= ims
    } else {
        false
    };
    not_modified.then_some(Precondition::NotModified)
}

fn parse_date(s: &str) -> Option<u64> {
    let s = s.trim();
    let t: SystemTime = httpdate::parse_http_date(s).ok().or_else(|| any_weekday(s))?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_secs())
}

/// A date whose day name is not its date's: the HTTP-date grammar does not
/// tie the two (RFC 9110 §5.6.7), so it is still a valid date (nginx reads
/// it too), which the parser refuses. Tried with each day name instead.
fn any_weekday(s: &str) -> Option<SystemTime> {
    const SHORT: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const LONG: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let end = s.find([',', ' '])?;
    let names = if end > 3 { LONG } else { SHORT };
    // Still a day name: anything else is not a date.
    if !names.contains(&&s[..end]) {
        return None;
    }
    names
        .iter()
        .find_map(|d| httpdate::parse_http_date(&format!("{d}{}", &s[end..])).ok())
}

/// Matches an If-Match / If-None-Match list against our (strong) ETag.
/// Strong comparison refuses weak tags; weak comparison ignores `W/`.
fn etag_list_matches(list: &str, etag: &str, strong: bool) -> bool {
    list.split(',').map(str::trim).any(|t| {
        if t == "*" {
            return true;
        }
        match t.strip_prefix("W/") {
            Some(w) => !strong && w == etag,
            None => t == etag,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_comparison() {
        assert!(etag_list_matches("\"a\", \"b\"", "\"b\"", true));
        assert!(etag_list_matches("W/\"b\"", "\"b\"", false));
        assert!(!etag_list_matches("W/\"b\"", "\"b\"", true));
        assert!(etag_list_matches("*", "\"b\"", true));
        assert!(!etag_list_matches("\"c\"", "\"b\"", false));
    }
}

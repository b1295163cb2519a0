//! `limit_extensions`: which script a FastCGI request would run, and
//! whether the pool refuses it. Plain `std` only: corral's preload library
//! (`direct` pools) includes this file and decides alike.

/// The script `path` names when it is denied by `extensions` (none: every
/// script allowed). The path may carry PATH_INFO after the script (a
/// front without `split_path_info`): the longest prefix that is a file is
/// the script. No file at all is not denied: the program answers its 404.
/// The path is bytes as the web server sent them (a name need not be
/// UTF-8, and the program opens those bytes).
pub fn denied<'p>(path: &'p [u8], extensions: &[String]) -> Option<&'p [u8]> {
    use std::os::unix::ffi::OsStrExt;
    if extensions.is_empty() {
        return None;
    }
    let mut p = path;
    let script = loop {
        if std::fs::metadata(std::ffi::OsStr::from_bytes(p)).is_ok_and(|m| m.is_file()) {
            break p;
        }
        match p.iter().rposition(|&b| b == b'/') {
            Some(cut) if cut > 0 => p = &p[..cut],
            _ => return None,
        }
    };
    let allowed = extensions.iter().any(|e| script.ends_with(e.as_bytes()));
    (!allowed).then_some(script)
}

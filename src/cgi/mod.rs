//! CGI (RFC 3875) without I/O: the meta-variables a script gets, and the
//! parsing of what it answers. The HTTP worker runs the scripts.

pub mod children;
pub mod env;
pub mod response;

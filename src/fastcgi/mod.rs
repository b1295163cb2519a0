//! FastCGI from the web server's side: the application groups a worker
//! passes requests to (balancing, passive health, kept-alive connections)
//! and the parameters a request becomes. The records themselves are the
//! `fastcgi-codec` crate's; the HTTP exchange that drives them is
//! `http::fastcgi_exchange`.

pub mod inbox;
pub mod params;
pub mod upstream;

pub use fastcgi_codec as codec;

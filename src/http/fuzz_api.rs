//! Entry points for the fuzz targets under `fuzz/`: each feeds untrusted
//! bytes to one parser. Not part of the server's API.

//! Where the scenarios send their polls and publishes: parsed URL templates.

use std::net::SocketAddr;

#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    pub(crate) authority: String,
    pub(crate) path: String,
}

pub(crate) fn parse_url(url: &str) -> Target {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("only http:// URLs: {url}"));
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let addr: SocketAddr = authority
        .replace("localhost", "127.0.0.1")
        .parse()
        .unwrap_or_else(|_| panic!("the URL needs an IP and a port: {url}"));
    assert!(addr.ip().is_loopback(), "loopback targets only: {url}");
    Target {
        addr,
        authority: authority.to_owned(),
        path: path.to_owned(),
    }
}

pub(crate) fn render(template: &str, id: &str, msg: &str) -> String {
    template.replace("{id}", id).replace("{msg}", msg)
}

// ---------------------------------------------------------------- HTTP/1

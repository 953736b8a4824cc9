//! Pushpin's routes file (`--routes FILE`): which backend each request goes
//! to, chosen by host, path prefix, protocol and TLS, with the path, `Host`
//! and headers rewritten on the way.
//!
//! The syntax is Pushpin's: one route per line, a condition then one or
//! more targets, `#` comments and blank lines allowed:
//!
//! ```text
//! # condition[,options]             target[,options] ...
//! *                                  127.0.0.1:8000
//! api.example.com,path_beg=/v1,path_rem=3  10.0.0.5:8080 10.0.0.6:8080
//! *,path_beg=/ws,proto=ws            127.0.0.1:9000,over_http
//! secure.example.com,sig_key=base64:c2VjcmV0  backend:443,ssl,host=backend.internal
//! ```
//!
//! A request is matched among the routes of its host (without the port),
//! or, when no route names that host, among the `*` routes; of those whose
//! condition holds, the most specific wins, whatever the order of the
//! lines: a `proto=` over none, then the longest `path_beg=`, then an
//! `ssl=` over none. Targets are tried in order: one that cannot be
//! connected to is skipped. The file is read again when it changes; held
//! requests and open streams keep going.

pub mod cors;
mod parse;
mod reload;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};

pub use self::reload::{Reloads, watch};

/// The protocol a request speaks, as routes tell them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Http,
    Ws,
}

/// A line of the routes file.
#[derive(Debug)]
pub struct Route {
    /// Its line number, for logs.
    pub line: usize,
    /// `None`: the route has only an id (never matched by host);
    /// `Some("")`: `*`.
    pub host: Option<String>,
    pub proto: Option<Proto>,
    pub ssl: Option<bool>,
    /// Empty: any path.
    pub path_beg: String,
    /// `id=`, or one made from the condition, as Pushpin makes it.
    pub id: String,
    /// Characters taken off the start of the path.
    pub path_rem: usize,
    /// `replace_beg=`: put in front of the path once `path_beg` is taken off.
    pub path_prepend: Option<String>,
    pub as_host: Option<String>,
    pub sig_key: Option<Vec<u8>>,
    pub sig_iss: Option<String>,
    /// `false` with `no_grip`: responses are passed on as they are.
    pub grip: bool,
    /// `aco`: CORS headers added to every response.
    pub aco: bool,
    /// `header=name:value`: set on the request (`None`: removed).
    pub headers: Vec<(HeaderName, Option<HeaderValue>)>,
    pub targets: Vec<Target>,
}

/// Where a route sends its requests.
#[derive(Debug, Clone)]
pub struct Target {
    /// The host to connect to (an IPv6 address in brackets).
    pub connect_host: String,
    pub port: u16,
    /// `ssl`: TLS to the backend.
    pub ssl: bool,
    /// `insecure`: its certificate is not checked.
    pub insecure: bool,
    /// `host=`: the `Host` the backend is sent.
    pub host: Option<String>,
    /// `over_http`: WebSockets are spoken to it as WebSocket-over-HTTP.
    pub over_http: bool,
}

impl Route {
    fn matches(&self, proto: Proto, ssl: bool, path: &str) -> bool {
        self.proto.is_none_or(|p| p == proto)
            && self.ssl.is_none_or(|s| s == ssl)
            && path.starts_with(self.path_beg.as_str())
    }

    /// Pushpin's order: a protocol named beats none, then a longer path
    /// prefix, then TLS named beats none. Compared as one key, so that the
    /// order of the lines never matters (Pushpin's pairwise test lets an
    /// `ssl=` route that comes later beat a longer `path_beg`).
    fn specificity(&self) -> (bool, usize, bool) {
        (
            self.proto.is_some(),
            self.path_beg.len(),
            self.ssl.is_some(),
        )
    }

    /// Two routes on one host with the same condition: the second is skipped.
    fn same_condition(&self, other: &Route) -> bool {
        self.proto == other.proto && self.ssl == other.ssl && self.path_beg == other.path_beg
    }

    /// The id Pushpin gives a route without `id=`: `host,proto,ssl,path`.
    fn condition_id(&self) -> String {
        let host = match self.host.as_deref() {
            None | Some("") => "*",
            Some(host) => host,
        };
        let proto = match self.proto {
            None => "*",
            Some(Proto::Http) => "http",
            Some(Proto::Ws) => "ws",
        };
        let ssl = match self.ssl {
            None => "*",
            Some(true) => "ssl",
            Some(false) => "nossl",
        };
        let path = if self.path_beg.is_empty() {
            "*"
        } else {
            &self.path_beg
        };
        format!("{host},{proto},{ssl},{path}")
    }

    /// The path (and query) the backend is sent for a client's: `path_rem`
    /// characters taken off its path, then `replace_beg` put in front.
    pub fn rewrite(&self, target: &str) -> String {
        let (path, query) = match target.find('?') {
            Some(at) => target.split_at(at),
            None => (target, ""),
        };
        let rest = path.get(self.path_rem..).unwrap_or("");
        let mut out = String::with_capacity(target.len() + 8);
        if let Some(prepend) = &self.path_prepend {
            out.push_str(prepend);
        }
        out.push_str(rest);
        if !out.starts_with('/') {
            out.insert(0, '/');
        }
        out.push_str(query);
        out
    }

    /// Sets `header=` headers on a request going to the backend.
    pub fn set_headers(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.headers {
            headers.remove(name);
            if let Some(value) = value {
                headers.insert(name.clone(), value.clone());
            }
        }
    }
}

impl Target {
    /// The URL of a request for `path` (already rewritten) on this target.
    pub fn url(&self, path: &str) -> Result<Uri, String> {
        let authority = Authority::try_from(format!("{}:{}", self.connect_host, self.port))
            .map_err(|err| format!("target {}:{}: {err}", self.connect_host, self.port))?;
        let path = PathAndQuery::try_from(path).map_err(|err| format!("path {path:?}: {err}"))?;
        Uri::builder()
            .scheme(if self.ssl {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            })
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|err| err.to_string())
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.ssl { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}", self.connect_host, self.port)
    }
}

/// A route and the target of it a request went to: where that request's
/// next links go too.
#[derive(Clone, Debug)]
pub struct Via {
    pub route: Arc<Route>,
    pub target: usize,
}

impl Via {
    fn target(&self) -> &Target {
        &self.route.targets[self.target]
    }

    /// The backend URL of a client's path and query.
    pub fn url(&self, client_target: &str) -> Result<Uri, String> {
        self.target().url(&self.route.rewrite(client_target))
    }

    /// Whether the target's certificate is checked.
    pub fn checked(&self) -> bool {
        !self.target().insecure
    }

    /// The route's own signing key and issuer, where it has them.
    pub fn signer(&self) -> (Option<&[u8]>, Option<&str>) {
        (self.route.sig_key.as_deref(), self.route.sig_iss.as_deref())
    }

    /// The `Host` the backend is sent, when the route or target sets one.
    pub fn host(&self) -> Option<&str> {
        self.target()
            .host
            .as_deref()
            .or(self.route.as_host.as_deref())
    }
}

/// The routes of one reading of the file.
#[derive(Debug, Default)]
pub struct Table {
    /// By host; `""` holds the `*` routes.
    by_host: HashMap<String, Vec<Arc<Route>>>,
    /// Every route, in file order.
    pub all: Vec<Arc<Route>>,
}

/// A file that did not load.
#[derive(Debug)]
pub struct LoadError(pub String);

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Table {
    /// Reads a routes text called `name`; `dir` is where `file:` keys are
    /// looked for. Errors name `name:line` and what is wrong; warnings
    /// (options the gateway ignores, duplicate conditions) are returned
    /// beside the table.
    pub fn parse(name: &str, dir: &Path, text: &str) -> Result<(Table, Vec<String>), LoadError> {
        let mut table = Table::default();
        let mut warnings = Vec::new();
        let mut errors = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let mut found = Vec::new();
            let route = match parse::route(line, dir, &mut found) {
                Ok(Some(route)) => route,
                Ok(None) => continue,
                Err(err) => {
                    errors.push(format!("{name}:{number}: {err}"));
                    continue;
                }
            };
            warnings.extend(found.into_iter().map(|w| format!("{name}:{number}: {w}")));
            let mut route = route;
            route.line = number;
            let Some(host) = route.host.clone() else {
                warnings.push(format!(
                    "{name}:{number}: the condition has no host (only an id); never matched"
                ));
                continue;
            };
            let routes = table.by_host.entry(host).or_default();
            if routes.iter().any(|r| r.same_condition(&route)) {
                warnings.push(format!(
                    "{name}:{number}: the same condition as an earlier line; skipped"
                ));
                continue;
            }
            let route = Arc::new(route);
            routes.push(Arc::clone(&route));
            table.all.push(route);
        }
        if !errors.is_empty() {
            return Err(LoadError(errors.join("\n")));
        }
        Ok((table, warnings))
    }

    /// The route for a request: among its host's routes, or the `*` ones
    /// when none names the host, the most specific that matches.
    pub fn find(&self, host: &str, proto: Proto, ssl: bool, path: &str) -> Option<&Arc<Route>> {
        let routes = self.by_host.get(host).or_else(|| self.by_host.get(""))?;
        let mut best: Option<&Arc<Route>> = None;
        for route in routes {
            if route.matches(proto, ssl, path)
                && best.is_none_or(|best| route.specificity() > best.specificity())
            {
                best = Some(route);
            }
        }
        best
    }
}

/// The routes in force, swapped whole when the file changes.
pub struct Routes {
    pub path: PathBuf,
    table: ArcSwap<Table>,
    pub reloads: Reloads,
}

impl Routes {
    /// Reads the file; an error names the file and line.
    pub fn load(path: &Path) -> Result<Routes, String> {
        let table = read(path)?;
        Ok(Routes {
            path: path.to_owned(),
            table: ArcSwap::from_pointee(table),
            reloads: Reloads::default(),
        })
    }

    /// The table in force now.
    pub fn table(&self) -> arc_swap::Guard<Arc<Table>> {
        self.table.load()
    }

    fn replace(&self, table: Table) {
        self.table.store(Arc::new(table));
    }
}

/// Reads and parses the file, logging its warnings.
fn read(path: &Path) -> Result<Table, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("cannot read the routes file {}: {err}", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let (table, warnings) =
        Table::parse(&path.display().to_string(), dir, &text).map_err(|err| err.0)?;
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    Ok(table)
}

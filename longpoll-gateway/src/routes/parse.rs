//! Pushpin's routes syntax: one route per line, sections separated by
//! spaces, each a value followed by comma-separated `name[=value]` props,
//! values quoted with `"` where they hold spaces, commas or `#`.

use std::path::Path;

use base64::Engine;
use http::{HeaderName, HeaderValue};

use super::{Proto, Route, Target};

/// One space-separated part of a line: its value and its props, in order
/// (a name may repeat: `header=` does).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Section {
    pub value: String,
    pub props: Vec<(String, String)>,
}

impl Section {
    fn has(&self, name: &str) -> bool {
        self.props.iter().any(|(n, _)| n == name)
    }

    /// The last value given for `name`, as Pushpin reads a single prop.
    fn get(&self, name: &str) -> Option<&str> {
        self.props
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.props
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    Separator,
    Initial,
    Prop,
}

/// Splits a line into sections as Pushpin's routes-file reader does: an
/// empty list for a blank or commented line. A first section holding `=`
/// is read as props of an empty value (`type=gala` is `""` with one prop).
pub fn sections(line: &str) -> Result<Vec<Section>, String> {
    let bytes = line.as_bytes();
    let mut out: Vec<Section> = Vec::new();
    let mut expect = Expect::Separator;
    let mut index = 0;
    loop {
        if expect == Expect::Separator {
            while index < bytes.len() && bytes[index] == b' ' {
                index += 1;
            }
            if index >= bytes.len() || bytes[index] == b'#' {
                return Ok(out);
            }
            expect = Expect::Initial;
            continue;
        }
        let start = index;
        let mut part = String::new();
        let at = loop {
            let at = bytes[index..]
                .iter()
                .position(|b| matches!(b, b'"' | b',' | b' ' | b'#'))
                .map_or(bytes.len(), |n| index + n);
            part.push_str(&line[index..at]);
            if at < bytes.len() && bytes[at] == b'"' {
                index = quoted(line, at + 1, &mut part)?;
                continue;
            }
            break at;
        };
        if expect == Expect::Initial {
            if part.contains('=') {
                // Read again, as props of an empty value.
                out.push(Section::default());
                index = start;
                expect = Expect::Prop;
                continue;
            }
            out.push(Section {
                value: part,
                props: Vec::new(),
            });
        } else {
            if part.is_empty() {
                return Err("expecting a prop after `,`".into());
            }
            let (name, value) = part.split_once('=').unwrap_or((&part, ""));
            if name.is_empty() {
                return Err("empty prop name".into());
            }
            let section = out.last_mut().expect("a prop follows a value");
            section.props.push((name.to_owned(), value.to_owned()));
        }
        if at < bytes.len() && bytes[at] == b',' {
            index = at + 1;
            expect = Expect::Prop;
        } else {
            index = at;
            expect = Expect::Separator;
        }
    }
}

/// Decodes a quoted run starting after its `"`; the index after the
/// closing quote.
fn quoted(line: &str, from: usize, part: &mut String) -> Result<usize, String> {
    let mut chars = line[from..].char_indices();
    while let Some((offset, c)) = chars.next() {
        match c {
            '"' => return Ok(from + offset + 1),
            '\\' => match chars.next() {
                Some((_, c @ ('\\' | '"'))) => part.push(c),
                Some((_, c)) => return Err(format!("unexpected escape character: {c}")),
                None => return Err("unterminated escape sequence".into()),
            },
            c => part.push(c),
        }
    }
    Err("unterminated quoted section".into())
}

/// Props Pushpin reads that the gateway has no use for: accepted, with a
/// warning, so that a Pushpin routes file loads as it is.
const IGNORED: &[&str] = &[
    "debug",
    "jsonp_mode",
    "jsonp_cb",
    "jsonp_body",
    "jsonp_defcb",
    "jsonp_defmethod",
    "session",
    "sockjs",
    "sockjs_as_path",
    "prefix",
    "orig_headers",
    "log_level",
];
const KNOWN: &[&str] = &[
    "proto",
    "ssl",
    "id",
    "path_beg",
    "sig_iss",
    "sig_key",
    "as_host",
    "path_rem",
    "replace_beg",
    "aco",
    "header",
    "no_grip",
];
const TARGET_IGNORED: &[&str] = &[
    "untrusted",
    "trust_connect_host",
    "sub",
    "one_event",
    "ipc_file_mode",
];
const TARGET_KNOWN: &[&str] = &["ssl", "insecure", "host", "over_http"];

/// A line read: `None` for a blank or comment line; the warnings say what
/// the gateway ignores.
pub fn route(line: &str, dir: &Path, warnings: &mut Vec<String>) -> Result<Option<Route>, String> {
    let sections = sections(line)?;
    let Some((condition, targets)) = sections.split_first() else {
        return Ok(None);
    };
    if targets.is_empty() {
        return Err("a route needs a condition and at least one target".into());
    }
    for (name, _) in &condition.props {
        if IGNORED.contains(&name.as_str()) {
            warnings.push(format!("`{name}` is not supported by the gateway; ignored"));
        } else if !KNOWN.contains(&name.as_str()) {
            warnings.push(format!("unknown option `{name}`; ignored"));
        }
    }
    let host = match condition.value.as_str() {
        "" => None,
        "*" => Some(String::new()),
        host => Some(host.to_ascii_lowercase()),
    };
    let proto = match condition.get("proto") {
        None => None,
        Some("http") => Some(Proto::Http),
        Some("ws") => Some(Proto::Ws),
        Some(other) => return Err(format!("proto must be `http` or `ws`, not {other:?}")),
    };
    let ssl = match condition.get("ssl") {
        None => None,
        Some("yes") => Some(true),
        Some("no") => Some(false),
        Some(other) => return Err(format!("ssl must be `yes` or `no`, not {other:?}")),
    };
    let path_beg = match condition.get("path_beg") {
        Some("") => return Err("path_beg cannot be empty".into()),
        Some(path) => path.to_owned(),
        None => String::new(),
    };
    let mut path_rem = match condition.get("path_rem") {
        None => 0,
        Some(n) => n
            .parse::<usize>()
            .map_err(|_| format!("path_rem must be a number of characters, not {n:?}"))?,
    };
    let path_prepend = condition.get("replace_beg").map(|with| {
        path_rem = path_beg.len();
        with.to_owned()
    });
    let sig_key = condition
        .get("sig_key")
        .filter(|key| !key.is_empty())
        .map(|key| sig_key(key, dir))
        .transpose()?;
    let mut headers = Vec::new();
    for header in condition.all("header") {
        let Some((name, value)) = header.split_once(':').filter(|(name, _)| !name.is_empty())
        else {
            return Err(format!("header must be `name:value`, not {header:?}"));
        };
        let name = HeaderName::try_from(name)
            .map_err(|_| format!("header: {name:?} is not a header name"))?;
        let value = value.trim_start_matches(' ');
        let value = if value.is_empty() {
            None
        } else {
            Some(
                HeaderValue::try_from(value)
                    .map_err(|_| format!("header: {value:?} is not a header value"))?,
            )
        };
        headers.push((name, value));
    }
    let targets = targets
        .iter()
        .map(|section| target(section, warnings))
        .collect::<Result<Vec<_>, _>>()?;
    let mut route = Route {
        line: 0,
        host,
        proto,
        ssl,
        path_beg,
        id: condition.get("id").unwrap_or_default().to_owned(),
        path_rem,
        path_prepend,
        as_host: condition
            .get("as_host")
            .filter(|h| !h.is_empty())
            .map(str::to_owned),
        sig_key,
        sig_iss: condition
            .get("sig_iss")
            .filter(|i| !i.is_empty())
            .map(str::to_owned),
        grip: !condition.has("no_grip"),
        aco: condition.has("aco"),
        headers,
        targets,
    };
    if route.id.is_empty() {
        route.id = route.condition_id();
    }
    Ok(Some(route))
}

fn target(section: &Section, warnings: &mut Vec<String>) -> Result<Target, String> {
    let value = section.value.as_str();
    if value == "test" || value.starts_with("zhttp/") || value.starts_with("zhttpreq/") {
        return Err(format!(
            "target {value:?}: Pushpin's internal targets are not supported; give host:port"
        ));
    }
    for (name, _) in &section.props {
        if TARGET_IGNORED.contains(&name.as_str()) || name == "client_cert" || name == "client_key"
        {
            warnings.push(format!(
                "target option `{name}` is not supported by the gateway; ignored"
            ));
        } else if !TARGET_KNOWN.contains(&name.as_str()) {
            warnings.push(format!("unknown target option `{name}`; ignored"));
        }
    }
    let split = if let Some(rest) = value.strip_prefix('[') {
        rest.find("]:").map(|at| (&rest[..at], &rest[at + 2..]))
    } else {
        value.split_once(':')
    };
    let Some((host, port)) = split else {
        return Err(format!("target {value:?}: expected host:port"));
    };
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|port| *port > 0)
        .ok_or_else(|| format!("target {value:?}: invalid port"))?;
    if host.is_empty() {
        return Err(format!("target {value:?}: no host"));
    }
    Ok(Target {
        connect_host: if value.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_owned()
        },
        port,
        ssl: section.has("ssl"),
        insecure: section.has("insecure"),
        host: section
            .get("host")
            .filter(|h| !h.is_empty())
            .map(str::to_owned),
        over_http: section.has("over_http"),
    })
}

/// `sig_key=`: the key as given, `base64:DATA`, or `file:PATH` (relative to
/// the routes file), as Pushpin reads it; HS256 secrets only.
fn sig_key(key: &str, dir: &Path) -> Result<Vec<u8>, String> {
    if let Some(file) = key.strip_prefix("file:") {
        let path = dir.join(file);
        return std::fs::read(&path)
            .map_err(|err| format!("sig_key: cannot read {}: {err}", path.display()));
    }
    match key.strip_prefix("base64:") {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|err| format!("sig_key: invalid base64: {err}")),
        None => Ok(key.as_bytes().to_vec()),
    }
}

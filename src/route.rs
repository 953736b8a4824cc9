//! Which requests are polls: path patterns and predicates, and the view of
//! a request's head that predicates, id sources and the `authorize` hook
//! are given.

use std::fmt;
use std::sync::Arc;

use http::{Extensions, HeaderMap, Method, Uri, Version};

/// A borrowed view of a request's head, given to route predicates and to
/// [`ClientId::from_fn`].
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    pub(crate) method: &'a Method,
    pub(crate) uri: &'a Uri,
    pub(crate) version: Version,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) extensions: &'a Extensions,
    pub(crate) params: PathParams<'a>,
}

impl<'a> RequestHead<'a> {
    pub(crate) fn of<B>(request: &'a http::Request<B>, params: PathParams<'a>) -> Self {
        RequestHead {
            method: request.method(),
            uri: request.uri(),
            version: request.version(),
            headers: request.headers(),
            extensions: request.extensions(),
            params,
        }
    }

    /// The request method.
    pub fn method(&self) -> &'a Method {
        self.method
    }

    /// The request target.
    pub fn uri(&self) -> &'a Uri {
        self.uri
    }

    /// The HTTP version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The request headers.
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }

    /// The request extensions, where an authentication layer leaves the
    /// identity it verified.
    pub fn extensions(&self) -> &'a Extensions {
        self.extensions
    }

    /// A parameter of the matched route pattern, as it appears in the path
    /// (still percent-encoded). `None` for predicate routes.
    pub fn path_param(&self, name: &str) -> Option<&'a str> {
        self.params.get(name)
    }
}

/// The most `{param}` segments a pattern may have.
const MAX_PARAMS: usize = 8;

type Predicate = dyn for<'a> Fn(&RequestHead<'a>) -> bool + Send + Sync;

#[derive(Clone)]
pub(crate) enum Route {
    Pattern(Pattern),
    Predicate(Arc<Predicate>),
}

/// A path pattern such as `/poll/{client}`: literal segments and `{name}`
/// segments, each matching exactly one non-slash segment of the path.
#[derive(Clone)]
pub(crate) struct Pattern {
    text: Box<str>,
    segments: Box<[Segment]>,
    names: Box<[Box<str>]>,
}

#[derive(Clone)]
enum Segment {
    Literal(Box<str>),
    Param,
}

/// The values of a matched pattern's parameters, as ranges of the path.
#[derive(Clone, Copy, Default)]
pub(crate) struct PathParams<'a> {
    path: &'a str,
    names: &'a [Box<str>],
    ranges: [(u32, u32); MAX_PARAMS],
}

impl<'a> PathParams<'a> {
    pub(crate) fn get(&self, name: &str) -> Option<&'a str> {
        let index = self.names.iter().position(|n| &**n == name)?;
        let (start, end) = self.ranges[index];
        self.path.get(start as usize..end as usize)
    }
}

impl fmt::Debug for PathParams<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for name in self.names {
            map.entry(name, &self.get(name));
        }
        map.finish()
    }
}

impl Pattern {
    /// Parses a pattern.
    ///
    /// # Panics
    /// When the pattern does not start with `/`, has a malformed or repeated
    /// `{param}`, or more than 8 of them.
    pub(crate) fn parse(text: &str) -> Self {
        let invalid = |why: &str| -> ! { panic!("invalid long-poll route {text:?}: {why}") };
        let Some(rest) = text.strip_prefix('/') else {
            invalid("it must start with `/`")
        };
        let mut names: Vec<Box<str>> = Vec::new();
        let segments = rest
            .split('/')
            .map(|segment| {
                if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    if name.is_empty()
                        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    {
                        invalid("a parameter is `{name}` with a name of letters, digits and `_`");
                    }
                    if names.iter().any(|n| &**n == name) {
                        invalid("a parameter name is used twice");
                    }
                    names.push(name.into());
                    Segment::Param
                } else if segment.contains(['{', '}']) {
                    invalid("a segment is either a literal or a whole `{name}`");
                } else {
                    Segment::Literal(segment.into())
                }
            })
            .collect();
        if names.len() > MAX_PARAMS {
            invalid("it has more than 8 parameters");
        }
        Pattern {
            text: text.into(),
            segments,
            names: names.into_boxed_slice(),
        }
    }

    /// The pattern's parameter, when it has exactly one.
    pub(crate) fn only_param(&self) -> Option<&str> {
        match &*self.names {
            [only] => Some(only),
            _ => None,
        }
    }

    pub(crate) fn has_param(&self, name: &str) -> bool {
        self.names.iter().any(|n| &**n == name)
    }

    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// Matches a request path; the parameters point into `path`.
    pub(crate) fn matches<'a>(&'a self, path: &'a str) -> Option<PathParams<'a>> {
        let mut rest = path.strip_prefix('/')?;
        let mut offset = 1;
        let mut params = PathParams {
            path,
            names: &self.names,
            ranges: [(0, 0); MAX_PARAMS],
        };
        let mut param = 0;
        let last = self.segments.len() - 1;
        for (index, segment) in self.segments.iter().enumerate() {
            let (piece, more) = match rest.find('/') {
                Some(slash) => (&rest[..slash], true),
                None => (rest, false),
            };
            if more != (index < last) {
                return None;
            }
            match segment {
                Segment::Literal(literal) => {
                    if piece != &**literal {
                        return None;
                    }
                }
                Segment::Param => {
                    let end = offset + piece.len();
                    params.ranges[param] = (u32::try_from(offset).ok()?, u32::try_from(end).ok()?);
                    param += 1;
                }
            }
            if more {
                rest = &rest[piece.len() + 1..];
                offset += piece.len() + 1;
            }
        }
        Some(params)
    }
}

impl Route {
    /// Whether a request is a poll on this route, and its path parameters.
    pub(crate) fn matches<'a, B>(
        &'a self,
        request: &'a http::Request<B>,
    ) -> Option<PathParams<'a>> {
        match self {
            Route::Pattern(pattern) => pattern.matches(request.uri().path()),
            Route::Predicate(predicate) => {
                predicate(&RequestHead::of(request, PathParams::default()))
                    .then(PathParams::default)
            }
        }
    }
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Pattern(pattern) => f.write_str(pattern.text()),
            Route::Predicate(_) => f.write_str("<predicate>"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn matches_whole_segments_only() {
        let pattern = Pattern::parse("/poll/{client}");
        let params = pattern.matches("/poll/abc").unwrap();
        assert_eq!(params.get("client"), Some("abc"));
        assert_eq!(params.get("other"), None);
        assert_eq!(pattern.matches("/poll/").unwrap().get("client"), Some(""));
        assert_eq!(
            pattern.matches("/poll/a%2Fb").unwrap().get("client"),
            Some("a%2Fb")
        );
        for path in [
            "/poll",
            "/poll/a/b",
            "/polls/a",
            "/poll/a/",
            "poll/a",
            "/",
            "",
            "/other/a",
        ] {
            assert!(pattern.matches(path).is_none(), "{path} matched");
        }
    }

    #[test]
    fn several_params_and_literals() {
        let pattern = Pattern::parse("/t/{tenant}/users/{user}/events");
        let params = pattern.matches("/t/acme/users/42/events").unwrap();
        assert_eq!(params.get("tenant"), Some("acme"));
        assert_eq!(params.get("user"), Some("42"));
        assert!(pattern.matches("/t/acme/users/42").is_none());
        assert!(pattern.matches("/t/acme/groups/42/events").is_none());
    }

    #[test]
    #[should_panic(expected = "must start with `/`")]
    fn refuses_relative_patterns() {
        Pattern::parse("poll/{client}");
    }

    #[test]
    #[should_panic(expected = "used twice")]
    fn refuses_repeated_names() {
        Pattern::parse("/{a}/{a}");
    }

    #[test]
    #[should_panic(expected = "a segment is either")]
    fn refuses_partial_params() {
        Pattern::parse("/poll/id-{client}");
    }

    proptest! {
        #[test]
        fn a_param_captures_any_segment(segment in "[^/]{0,40}") {
            let pattern = Pattern::parse("/poll/{client}");
            let path = format!("/poll/{segment}");
            let params = pattern.matches(&path).unwrap();
            prop_assert_eq!(params.get("client"), Some(segment.as_str()));
        }

        #[test]
        fn arbitrary_paths_never_panic(path in "\\PC{0,60}") {
            let pattern = Pattern::parse("/a/{b}/c/{d}");
            let _ = pattern.matches(&path);
        }
    }
}

//! Channel filters (`Grip-Channel: name; filter=...`), as Pushpin applies
//! them (`src/handler/filter.cpp`, `format.cpp`, `idformat.cpp`):
//!
//! - `skip-self`: drop an item whose publish meta `sender` is the
//!   subscription's meta `user`;
//! - `skip-users`: drop an item whose publish meta `skip_users` (a comma
//!   list) names the subscription's `user`;
//! - `require-sub`: drop an item whose publish meta `require_sub` names a
//!   channel the stream is not on;
//! - `build-id`: replace `%I` in the content with the stream's id, rendered
//!   from the subscription's meta `id_format` (`%(channel)s` is that
//!   channel's last id); `%(x)I` is `x`; `%%` is `%`. It also applies to the
//!   upstream's own bodies (the first response and next-link pages);
//! - `var-subst`: replace `%(key)s` in the content with the subscription's
//!   meta `key`.
//!
//! Unknown filter names are ignored, as in Pushpin.

use bytes::Bytes;

use super::instruct::Meta;

/// Pushpin's cap on filters per channel.
pub const MAX_FILTERS: usize = 5;

/// One filter of a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    SkipSelf,
    SkipUsers,
    RequireSub,
    BuildId,
    VarSubst,
}

/// What the filters decided for an item.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Send(Bytes),
    Drop,
    /// A filter could not run (a malformed directive, no `id_format`): the
    /// item is not sent.
    Error(String),
}

/// What the filters of one item see.
pub struct Context<'a> {
    /// Every channel of the stream with its last id (`None`: not tracked).
    pub channels: &'a [(String, Option<String>)],
    /// The subscription's meta (`Grip-Set-Meta`).
    pub subscription: &'a Meta,
    /// The item's publish meta.
    pub publish: &'a [(&'a str, &'a str)],
}

impl Filter {
    /// The filter of this name; `None` for a name the gateway does not know.
    pub fn named(name: &str) -> Option<Filter> {
        Some(match name {
            "skip-self" => Filter::SkipSelf,
            "skip-users" => Filter::SkipUsers,
            "require-sub" => Filter::RequireSub,
            "build-id" => Filter::BuildId,
            "var-subst" => Filter::VarSubst,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Filter::SkipSelf => "skip-self",
            Filter::SkipUsers => "skip-users",
            Filter::RequireSub => "require-sub",
            Filter::BuildId => "build-id",
            Filter::VarSubst => "var-subst",
        }
    }

    /// Whether the filter changes content (and so must match an item's
    /// `content-filters`).
    pub fn changes_content(self) -> bool {
        matches!(self, Filter::BuildId | Filter::VarSubst)
    }
}

/// The filters of a channel, from its names (unknown ones left out).
pub fn parse(names: &[String]) -> Vec<Filter> {
    names
        .iter()
        .filter_map(|name| Filter::named(name))
        .collect()
}

/// Whether an item's `content-filters` (when it lists them) are the
/// content-changing filters of the channel, in order; Pushpin drops an item
/// whose list differs.
pub fn content_filters_match(filters: &[Filter], listed: Option<&[&str]>) -> bool {
    let Some(listed) = listed else {
        return true;
    };
    filters
        .iter()
        .filter(|filter| filter.changes_content())
        .map(|filter| filter.name())
        .eq(listed.iter().copied())
}

/// Runs a channel's filters over an item's content, in order; the first
/// drop ends it.
pub fn apply(filters: &[Filter], context: &Context<'_>, content: Bytes) -> Verdict {
    let publish = |key: &str| {
        context
            .publish
            .iter()
            .find(|(name, _)| *name == key)
            .map(|(_, value)| *value)
            .filter(|value| !value.is_empty())
    };
    let user = context
        .subscription
        .get("user")
        .filter(|user| !user.is_empty());
    let mut content = content;
    for filter in filters {
        match filter {
            Filter::SkipSelf => {
                if user.is_some() && user == publish("sender") {
                    return Verdict::Drop;
                }
            }
            Filter::SkipUsers => {
                if let (Some(user), Some(skip)) = (user, publish("skip_users")) {
                    if skip.split(',').any(|name| name.trim() == user) {
                        return Verdict::Drop;
                    }
                }
            }
            Filter::RequireSub => {
                if let Some(required) = publish("require_sub") {
                    if !context.channels.iter().any(|(name, _)| name == required) {
                        return Verdict::Drop;
                    }
                }
            }
            Filter::BuildId => {
                let id = match stream_id(context) {
                    Ok(id) => id,
                    Err(err) => return Verdict::Error(err),
                };
                match render_ids(&content, id.as_deref().map(str::as_bytes), false) {
                    Ok((rendered, _)) => content = Bytes::from(rendered),
                    Err(err) => return Verdict::Error(err),
                }
            }
            Filter::VarSubst => {
                let vars = |directive: u8, arg: Option<&[u8]>, out: &mut Vec<u8>| {
                    if directive != b's' {
                        return Err(format!("unknown directive '{}'", directive as char));
                    }
                    let arg = arg.ok_or("directive 's' needs an argument")?;
                    let key = String::from_utf8_lossy(arg);
                    let value = context
                        .subscription
                        .get(&key)
                        .ok_or_else(|| format!("no such variable '{key}'"))?;
                    out.extend_from_slice(value.as_bytes());
                    Ok(())
                };
                match process(&content, &vars, false) {
                    Ok((rendered, _)) => content = Bytes::from(rendered),
                    Err(err) => return Verdict::Error(err),
                }
            }
        }
    }
    Verdict::Send(content)
}

/// The id `build-id` writes for `%I`: the subscription's `id_format`
/// rendered with each channel's last id (`None` when no channel has one).
fn stream_id(context: &Context<'_>) -> Result<Option<String>, String> {
    let format = context
        .subscription
        .get("id_format")
        .ok_or("build-id: no subscription meta 'id_format'")?;
    if context.channels.iter().all(|(_, id)| id.is_none()) {
        return Ok(None);
    }
    let vars = |directive: u8, arg: Option<&[u8]>, out: &mut Vec<u8>| {
        if directive != b's' {
            return Err(format!("unknown directive '{}'", directive as char));
        }
        let arg = arg.ok_or("directive 's' needs an argument")?;
        let id = context
            .channels
            .iter()
            .find(|(name, _)| name.as_bytes() == arg)
            .and_then(|(_, id)| id.as_deref())
            .ok_or_else(|| format!("no such variable '{}'", String::from_utf8_lossy(arg)))?;
        out.extend_from_slice(id.as_bytes());
        Ok(())
    };
    let (id, _) = process(format.as_bytes(), &vars, false)
        .map_err(|err| format!("build-id: failed to render the id: {err}"))?;
    let mut id = String::from_utf8_lossy(&id).into_owned();
    match context.subscription.get("id_encoding") {
        None => {}
        Some("hex") => {
            id = id.bytes().map(|byte| format!("{byte:02x}")).collect();
        }
        Some(other) => return Err(format!("build-id: unsupported id_encoding {other:?}")),
    }
    Ok(Some(id))
}

/// `%I` → `id`, `%(x)I` → `x`, `%%` → `%`, in `content`. With `partial`, an
/// unfinished directive at the end is left over: the bytes consumed come
/// back with the output.
pub fn render_ids(
    content: &[u8],
    id: Option<&[u8]>,
    partial: bool,
) -> Result<(Vec<u8>, usize), String> {
    let ids = |directive: u8, arg: Option<&[u8]>, out: &mut Vec<u8>| {
        if directive != b'I' {
            return Err(format!("unknown directive '{}'", directive as char));
        }
        let id = arg.or(id).ok_or("no id given and no id in the context")?;
        out.extend_from_slice(id);
        Ok(())
    };
    process(content, &ids, partial)
}

/// Writes the value of a directive (`I`, `s`, ...) with its optional
/// argument, or says why it cannot.
type Directive<'a> = dyn Fn(u8, Option<&[u8]>, &mut Vec<u8>) -> Result<(), String> + 'a;

/// Pushpin's `Format::process`: `%X` and `%(arg)X` directives (a backslash
/// escapes a character inside the parentheses), `%%` for `%`. With
/// `partial`, stops before an unfinished directive at the end and says how
/// many bytes it consumed; without, an unfinished directive is an error.
fn process(
    format: &[u8],
    handler: &Directive<'_>,
    partial: bool,
) -> Result<(Vec<u8>, usize), String> {
    let mut out = Vec::with_capacity(format.len());
    let mut at = 0;
    let unfinished = |out: Vec<u8>, marker: usize, what: String| {
        if partial {
            Ok((out, marker))
        } else {
            Err(what)
        }
    };
    while at < format.len() {
        let byte = format[at];
        if byte != b'%' {
            // Copy the run up to the next directive at once.
            let run = format[at..]
                .iter()
                .position(|&b| b == b'%')
                .map_or(format.len(), |found| at + found);
            out.extend_from_slice(&format[at..run]);
            at = run;
            continue;
        }
        let marker = at;
        let Some(&next) = format.get(at + 1) else {
            return unfinished(
                out,
                marker,
                format!("expected a directive after '%' at {at}"),
            );
        };
        if next == b'%' {
            out.push(b'%');
            at += 2;
        } else if next == b'(' {
            let mut arg = Vec::new();
            let mut index = at + 2;
            let mut closed = false;
            while index < format.len() {
                match format[index] {
                    b'\\' => {
                        let Some(&escaped) = format.get(index + 1) else {
                            break;
                        };
                        arg.push(escaped);
                        index += 2;
                    }
                    b')' => {
                        closed = true;
                        break;
                    }
                    other => {
                        arg.push(other);
                        index += 1;
                    }
                }
            }
            let Some(&directive) = format.get(index + 1).filter(|_| closed) else {
                return unfinished(out, marker, format!("unterminated field at {marker}"));
            };
            handler(directive, Some(&arg), &mut out)
                .map_err(|err| format!("{err} at {}", index + 1))?;
            at = index + 2;
        } else if next.is_ascii_alphabetic() {
            handler(next, None, &mut out).map_err(|err| format!("{err} at {}", at + 1))?;
            at += 2;
        } else {
            return Err(format!(
                "unknown directive '{}' at {}",
                next as char,
                at + 1
            ));
        }
    }
    Ok((out, format.len()))
}

/// `build-id` over a body that arrives in pieces (the upstream's own
/// response and next-link pages): no channel has an id there, so `%I` is an
/// error unless it names its id, as in Pushpin.
#[derive(Default)]
pub struct BodyIds {
    carry: Vec<u8>,
}

impl BodyIds {
    /// The rendered bytes of `chunk`; an unfinished directive at its end
    /// waits for the next chunk.
    pub fn update(&mut self, chunk: &[u8]) -> Result<Bytes, String> {
        self.carry.extend_from_slice(chunk);
        let (out, used) = render_ids(&self.carry, None, true)?;
        self.carry.drain(..used);
        Ok(Bytes::from(out))
    }

    /// The end of the body: what was left over must be complete.
    pub fn finish(&mut self) -> Result<Bytes, String> {
        let (out, _) = render_ids(&std::mem::take(&mut self.carry), None, false)?;
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> Meta {
        let mut meta = Meta::default();
        for (key, value) in pairs {
            meta.set((*key).into(), (*value).into());
        }
        meta
    }

    fn run(
        filters: &[&str],
        channels: &[(&str, Option<&str>)],
        subscription: &Meta,
        publish: &[(&str, &str)],
        content: &str,
    ) -> Verdict {
        let names: Vec<String> = filters.iter().map(|f| (*f).to_owned()).collect();
        let channels: Vec<(String, Option<String>)> = channels
            .iter()
            .map(|(name, id)| ((*name).into(), id.map(Into::into)))
            .collect();
        let context = Context {
            channels: &channels,
            subscription,
            publish,
        };
        apply(&parse(&names), &context, Bytes::from(content.to_owned()))
    }

    #[test]
    fn delivery_filters_drop_what_they_should() {
        let alice = meta(&[("user", "alice")]);
        let on = [("events-a", None), ("user-alice", None)];
        let send = |text: &str| Verdict::Send(Bytes::from(text.to_owned()));
        assert_eq!(
            run(&["skip-self"], &on, &alice, &[("sender", "alice")], "x"),
            Verdict::Drop
        );
        assert_eq!(
            run(&["skip-self"], &on, &alice, &[("sender", "bob")], "x"),
            send("x")
        );
        assert_eq!(
            run(
                &["skip-users"],
                &on,
                &alice,
                &[("skip_users", "bob, alice")],
                "x"
            ),
            Verdict::Drop
        );
        assert_eq!(
            run(&["skip-users"], &on, &alice, &[("skip_users", "bob")], "x"),
            send("x")
        );
        assert_eq!(
            run(
                &["require-sub"],
                &on,
                &alice,
                &[("require_sub", "events-b")],
                "x"
            ),
            Verdict::Drop
        );
        assert_eq!(
            run(
                &["require-sub"],
                &on,
                &alice,
                &[("require_sub", "events-a")],
                "x"
            ),
            send("x")
        );
        // No user in the subscription: nothing to skip.
        assert_eq!(
            run(
                &["skip-self", "skip-users"],
                &on,
                &Meta::default(),
                &[("sender", ""), ("skip_users", "")],
                "x"
            ),
            send("x")
        );
        assert_eq!(run(&["no-such-filter"], &on, &alice, &[], "x"), send("x"));
    }

    #[test]
    fn build_id_renders_django_eventstreams_ids() {
        let sub = meta(&[("id_format", "test:%(events-test)s"), ("user", "anonymous")]);
        let channels = [("events-test", Some("7")), ("user-anonymous", None)];
        let content = "event: message\nid: %I\ndata: 100%% sure\n\n";
        assert_eq!(
            run(&["build-id", "skip-users"], &channels, &sub, &[], content),
            Verdict::Send(Bytes::from_static(
                b"event: message\nid: test:7\ndata: 100% sure\n\n"
            ))
        );
        assert_eq!(
            run(&["build-id"], &channels, &sub, &[], "%(given)I"),
            Verdict::Send(Bytes::from_static(b"given"))
        );
        let hex = meta(&[("id_format", "%(events-test)s"), ("id_encoding", "hex")]);
        assert_eq!(
            run(&["build-id"], &channels, &hex, &[], "%I"),
            Verdict::Send(Bytes::from_static(b"37"))
        );
        for (sub, content) in [
            (Meta::default(), "%I"),
            (meta(&[("id_format", "%(nope)s")]), "%I"),
            (sub.clone(), "%Q"),
            (sub.clone(), "50%"),
            (sub.clone(), "%(open"),
        ] {
            assert!(
                matches!(
                    run(&["build-id"], &channels, &sub, &[], content),
                    Verdict::Error(_)
                ),
                "{content}"
            );
        }
    }

    #[test]
    fn var_subst_takes_the_subscription_meta() {
        let sub = meta(&[("user", "alice"), ("a)b", "x")]);
        assert_eq!(
            run(&["var-subst"], &[], &sub, &[], r"hi %(user)s %(a\)b)s %%"),
            Verdict::Send(Bytes::from_static(b"hi alice x %"))
        );
        assert!(matches!(
            run(&["var-subst"], &[], &sub, &[], "%(who)s"),
            Verdict::Error(_)
        ));
        assert!(matches!(
            run(&["var-subst"], &[], &sub, &[], "%s"),
            Verdict::Error(_)
        ));
    }

    #[test]
    fn content_filters_must_match_the_channels() {
        let filters = parse(&["skip-users".into(), "build-id".into()]);
        assert!(content_filters_match(&filters, None));
        assert!(content_filters_match(&filters, Some(&["build-id"])));
        assert!(!content_filters_match(&filters, Some(&[])));
        assert!(!content_filters_match(&[], Some(&["build-id"])));
    }

    #[test]
    fn bodies_are_rendered_across_chunks() {
        let mut ids = BodyIds::default();
        let mut out = Vec::new();
        for chunk in ["a 100%", "% b %(x", "\\)y)", "I c"] {
            out.extend_from_slice(&ids.update(chunk.as_bytes()).unwrap());
        }
        out.extend_from_slice(&ids.finish().unwrap());
        assert_eq!(out, b"a 100% b x)y c");
        let mut open = BodyIds::default();
        assert!(open.update(b"50%").unwrap().starts_with(b"50"));
        assert!(open.finish().is_err());
        assert!(BodyIds::default().update(b"%I").is_err());
    }
}

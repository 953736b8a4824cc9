//! One stream's life, as a task of its own: write the upstream's first body,
//! then wait on the stream log for the stream's channels from a cursor per
//! channel, write what comes (through the channel's filters), advance;
//! between items, keep-alives; when asked (a hint, a timeout, a `prev-id`
//! the log cannot follow), the next link, whose response continues the same
//! client response and may change the channels.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;
use tower_longpoll::store::ReadFrom;
use tower_longpoll::{Cursor, StoredEvent, WaitError, WaitLimits};

use super::Admission;
use super::filter::{self, BodyIds, Context, Filter, Verdict};
use super::instruct::{KeepAlive, KeepAliveMode, Meta, NextLink};
use super::link::{self, Failure, Origin, PageBody};
use super::outbox::{Outbox, Refused};
use crate::grip;
use crate::http_stream::{Action, KeptItem};
use crate::state::{State, add};

/// The most items read from one channel at once.
const BATCH: usize = 64;
/// The most kept items read to find where a stream starts in a channel's
/// log (more than a log keeps).
const SCAN: usize = 4096;
/// Pushpin's retries of a failed next link, and the first delay between
/// them (doubled each time, plus up to a second at random).
const NEXT_RETRIES: u32 = 5;
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Where the first bytes of a stream come from.
pub enum First {
    /// The upstream's body, sent as it arrives.
    Upstream(Incoming),
    /// A body read whole (`application/grip-instruct`).
    Bytes(Bytes),
}

pub struct Session {
    state: Arc<State>,
    outbox: Outbox,
    admission: Admission,
    origin: Origin,
    /// The URL of the last response (client space): relative next links
    /// resolve against it.
    current: String,
    held: bool,
    /// Each channel and the last id it follows (`prev-id`, then the id of
    /// each item sent; `None`: not followed).
    ids: Vec<(String, Option<String>)>,
    filters: Vec<Vec<Filter>>,
    /// Where the stream is in each channel's log.
    cursors: Vec<Cursor>,
    /// Each channel's end when the stream was placed: a close or hint up
    /// to there was for the streams of that time, not this one.
    live_from: Vec<Cursor>,
    /// The cursors of the channels before the last next link, by name.
    previous: Vec<(String, Cursor)>,
    keep_alive: Option<KeepAlive>,
    meta: Meta,
    next: Option<NextLink>,
    /// The gone link, resolved against the request's URL.
    gone: Option<String>,
    /// Whether a channel has `build-id`, which renders the upstream's bodies
    /// too.
    render_bodies: bool,
}

/// How a stream ended.
enum End {
    /// Cleanly, as the upstream asked: a close action, or a next link that
    /// ended it.
    Closed,
    /// The client went away.
    Gone,
    /// The client did not read.
    Slow,
    /// The gateway is stopping.
    Shutdown,
    Failed(String),
}

/// Why a hold stopped.
enum Then {
    /// Request the next link now: a hint, its timeout, or a recovery.
    FetchNext,
    End(End),
}

/// What became of one item.
enum Delivered {
    Sent,
    Skipped,
    Then(Then),
}

/// Where a stream starts in a channel's log.
enum Placed {
    /// Right after this cursor.
    At(Cursor),
    /// The `prev-id` is not in the log: `end` is the log's end; `known`
    /// whether the log has items with ids (so the client is behind).
    Unknown { end: Cursor, known: bool },
}

impl Session {
    /// Places the stream in its channels' logs, before anything is written
    /// (so that nothing published from now on is missed), and starts its
    /// task.
    pub async fn begin(
        state: Arc<State>,
        stream: grip::Stream,
        admission: Admission,
        outbox: Outbox,
        origin: Origin,
        first: First,
    ) {
        let gone = stream
            .gone
            .as_deref()
            .map(|gone| link::resolve(&origin.target, gone));
        let mut session = Session {
            state,
            outbox,
            admission,
            current: origin.target.clone(),
            origin,
            held: false,
            ids: Vec::new(),
            filters: Vec::new(),
            cursors: Vec::new(),
            live_from: Vec::new(),
            previous: Vec::new(),
            keep_alive: None,
            meta: Meta::default(),
            next: None,
            gone,
            render_bodies: false,
        };
        session.adopt(stream);
        let placed = if session.held {
            session.place(true).await
        } else {
            Ok(false)
        };
        tokio::spawn(async move {
            let end = match placed {
                Ok(recover) => session.run(first, recover).await,
                Err(end) => end,
            };
            session.finish(end);
        });
    }

    /// Takes the instructions of a response: channels, keep-alive, meta,
    /// next link.
    fn adopt(&mut self, stream: grip::Stream) {
        self.previous = self
            .ids
            .drain(..)
            .map(|(name, _)| name)
            .zip(self.cursors.drain(..))
            .collect();
        self.held = stream.held;
        self.filters = stream
            .channels
            .iter()
            .map(|channel| filter::parse(&channel.filters))
            .collect();
        self.render_bodies = self.filters.iter().flatten().any(|f| *f == Filter::BuildId);
        self.ids = stream
            .channels
            .into_iter()
            .map(|channel| (channel.name, channel.prev_id))
            .collect();
        let names: Vec<&str> = self.ids.iter().map(|(name, _)| name.as_str()).collect();
        self.admission.move_to(&names);
        self.keep_alive = stream.keep_alive;
        self.meta = stream.meta;
        self.next = stream.next;
    }

    async fn run(&mut self, first: First, mut fetch: bool) -> End {
        let written = match first {
            First::Upstream(body) => self.copy(body).await,
            First::Bytes(bytes) => self.write_body(bytes).await,
        };
        if let Err(end) = written {
            return end;
        }
        fetch |= !self.held;
        loop {
            if fetch {
                if let Err(end) = self.follow_next().await {
                    return end;
                }
                if !self.held {
                    if self.next.is_none() {
                        return End::Closed;
                    }
                    continue;
                }
                match self.place(false).await {
                    Ok(_) => {}
                    Err(end) => return end,
                }
            }
            match self.hold().await {
                Then::FetchNext => fetch = true,
                Then::End(end) => return end,
            }
        }
    }

    /// Finds where the stream starts in each channel's log. `Ok(true)`: a
    /// `prev-id` the log does not have, on the first hold, with a next link
    /// to recover through (as Pushpin does).
    async fn place(&mut self, first: bool) -> Result<bool, End> {
        let store = self.state.streams.hub.store();
        let mut cursors = Vec::with_capacity(self.ids.len());
        let mut live_from = Vec::with_capacity(self.ids.len());
        let mut behind = false;
        for (name, prev_id) in &self.ids {
            let read = tokio::select! {
                read = store.read(name, ReadFrom::Start, SCAN) => read,
                () = self.state.streams.stop.cancelled() => return Err(End::Shutdown),
            };
            let read = read.map_err(|err| End::Failed(format!("the stream log failed: {err}")))?;
            let before = self
                .previous
                .iter()
                .find(|(old, _)| old == name)
                .map(|(_, cursor)| *cursor);
            let end = read.events().last().map_or(read.position(), |e| e.cursor);
            live_from.push(end);
            let cursor = match place(read.events(), read.position(), prev_id.as_deref()) {
                Placed::At(cursor) => cursor,
                Placed::Unknown { end, known } => {
                    if first && known && prev_id.is_some() {
                        behind = true;
                    }
                    // A channel the stream was already on goes on from
                    // where it was: what came meanwhile is not skipped.
                    before.unwrap_or(end)
                }
            };
            cursors.push(cursor);
        }
        self.cursors = cursors;
        self.live_from = live_from;
        self.previous.clear();
        if behind {
            add(&self.state.streams.metrics.gaps);
            if self.next.is_some() {
                add(&self.state.streams.metrics.recoveries);
                return Ok(true);
            }
            tracing::debug!("a prev-id is not in the stream log; the stream starts at its end");
        }
        Ok(false)
    }

    /// Waits for items on the channels and writes them, with keep-alives,
    /// until something else is due.
    async fn hold(&mut self) -> Then {
        let state = Arc::clone(&self.state);
        let streams = &state.streams;
        let keep_alive = self.keep_alive.clone();
        let mut keep_alive_at = keep_alive
            .as_ref()
            .map(|k| Instant::now() + jittered(k.every));
        let mut next_at = self
            .next
            .as_ref()
            .map(|n| Instant::now() + jittered(n.timeout));
        let every_channel: u32 = if self.ids.len() >= 32 {
            u32::MAX
        } else {
            (1 << self.ids.len()) - 1
        };
        let mut active = 0u32;
        let mut first = 0;
        let unlimited = WaitLimits::new(usize::MAX, usize::MAX);
        loop {
            let count = self.ids.len();
            // Each wait starts with the channel after the last one served,
            // so that a busy channel cannot starve the others.
            let order: Vec<usize> = (0..count).map(|k| (first + k) % count).collect();
            let wait = streams.hub.wait_for(
                order
                    .iter()
                    .map(|&i| (self.ids[i].0.as_str(), ReadFrom::Cursor(self.cursors[i]))),
                BATCH,
                unlimited,
            );
            let keep_alive_due = until(keep_alive_at);
            let next_due = until(next_at);
            tokio::select! {
                biased;
                () = streams.stop.cancelled() => return Then::End(End::Shutdown),
                () = self.outbox.dropped() => return Then::End(End::Gone),
                found = wait => {
                    let (index, read) = match found {
                        Ok(found) => found,
                        Err(WaitError::ShuttingDown) => return Then::End(End::Shutdown),
                        Err(err) => {
                            return Then::End(End::Failed(format!("the stream log failed: {err}")));
                        }
                    };
                    let channel = order[index];
                    first = channel + 1;
                    if read.has_gap() {
                        add(&streams.metrics.gaps);
                        if self.next.is_some() {
                            add(&streams.metrics.recoveries);
                            return Then::FetchNext;
                        }
                    }
                    for stored in read.events() {
                        self.cursors[channel] = stored.cursor;
                        match self.deliver(channel, stored) {
                            Delivered::Sent => {
                                if let Some(k) = keep_alive.as_ref().filter(|k| k.mode == KeepAliveMode::Idle) {
                                    keep_alive_at = Some(Instant::now() + jittered(k.every));
                                }
                                // Pushpin waits for the next link's timeout
                                // again once every channel had an item.
                                active |= 1 << (channel % 32);
                                if active & every_channel == every_channel {
                                    active = 0;
                                    next_at = self.next.as_ref().map(|n| Instant::now() + jittered(n.timeout));
                                }
                            }
                            Delivered::Skipped => {}
                            Delivered::Then(then) => return then,
                        }
                    }
                }
                () = keep_alive_due => {
                    let Some(k) = keep_alive.as_ref() else { continue };
                    match self.outbox.push(k.data.clone()) {
                        Ok(()) => add(&streams.metrics.keep_alives),
                        Err(Refused::Full) => return Then::End(End::Slow),
                        Err(Refused::Closed) => return Then::End(End::Gone),
                    }
                    keep_alive_at = Some(Instant::now() + jittered(k.every));
                }
                () = next_due => return Then::FetchNext,
            }
        }
    }

    /// One item of `channel`'s log.
    fn deliver(&mut self, channel: usize, stored: &StoredEvent) -> Delivered {
        let metrics = &self.state.streams.metrics;
        let Some(item) = KeptItem::decode(&stored.event) else {
            tracing::debug!(cursor = %stored.cursor, "skipped an item the stream log does not know");
            return Delivered::Skipped;
        };
        if let Some(last) = self.ids[channel].1.as_deref() {
            // Already sent (the upstream's own body had it).
            if item.id == Some(last) {
                return Delivered::Skipped;
            }
            // Not the item after the one the client has: the upstream
            // knows what is missing, as in Pushpin.
            if item.prev_id.is_some_and(|prev| prev != last) && self.next.is_some() {
                add(&metrics.recoveries);
                return Delivered::Then(Then::FetchNext);
            }
            // Before the filters: build-id writes the item's own id.
            self.ids[channel].1 = item.id.map(str::to_owned);
        }
        // A close or hint published before the stream was placed was for
        // the streams of that time (this client may be reconnecting after
        // that very close).
        let live = stored.cursor.partial_cmp(&self.live_from[channel])
            == Some(std::cmp::Ordering::Greater);
        match item.action {
            Action::Close if live => return Delivered::Then(Then::End(End::Closed)),
            Action::Hint if live && self.next.is_some() => {
                return Delivered::Then(Then::FetchNext);
            }
            Action::Close | Action::Hint => return Delivered::Skipped,
            Action::Send => {}
        }
        let filters = &self.filters[channel];
        if !filter::content_filters_match(filters, item.content_filters.as_deref()) {
            add(&metrics.filtered);
            return Delivered::Skipped;
        }
        let context = Context {
            channels: &self.ids,
            subscription: &self.meta,
            publish: &item.meta,
        };
        match filter::apply(filters, &context, item.content.clone()) {
            Verdict::Send(content) => match self.outbox.push(content) {
                Ok(()) => {
                    add(&metrics.items);
                    Delivered::Sent
                }
                Err(Refused::Full) => Delivered::Then(Then::End(End::Slow)),
                Err(Refused::Closed) => Delivered::Then(Then::End(End::Gone)),
            },
            Verdict::Drop => {
                add(&metrics.filtered);
                Delivered::Skipped
            }
            Verdict::Error(err) => {
                add(&metrics.filtered);
                tracing::debug!(error = err, "a filter could not run; the item is not sent");
                Delivered::Skipped
            }
        }
    }

    /// Requests the next link (retrying as Pushpin does), writes what it
    /// answered and takes its instructions.
    async fn follow_next(&mut self) -> Result<(), End> {
        let Some(next) = self.next.clone() else {
            return Err(End::Closed);
        };
        let target = link::resolve(&self.current, &next.url);
        let metrics = &self.state.streams.metrics;
        let mut attempt = 0;
        let page = loop {
            let last: Vec<(&str, &str)> = self
                .ids
                .iter()
                .filter_map(|(name, id)| Some((name.as_str(), id.as_deref()?)))
                .collect();
            let fetched = tokio::select! {
                fetched = link::fetch(&self.state, &self.origin, &target, &last) => fetched,
                () = self.state.streams.stop.cancelled() => return Err(End::Shutdown),
                () = self.outbox.dropped() => return Err(End::Gone),
            };
            match fetched {
                Ok(page) => break page,
                Err(Failure::Fatal(err)) => {
                    add(&metrics.next_link_failures);
                    return Err(End::Failed(err));
                }
                Err(Failure::Retry(err)) => {
                    add(&metrics.next_link_failures);
                    if attempt >= NEXT_RETRIES {
                        return Err(End::Failed(format!(
                            "{err}; gave up after {attempt} retries"
                        )));
                    }
                    let delay = RETRY_DELAY * 2u32.pow(attempt)
                        + Duration::from_millis(fastrand::u64(..1000));
                    attempt += 1;
                    tracing::debug!(error = err, ?delay, "next link failed; trying again");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.state.streams.stop.cancelled() => return Err(End::Shutdown),
                        () = self.outbox.dropped() => return Err(End::Gone),
                    }
                }
            }
        };
        self.current = target;
        match page.instruction {
            Some(stream) => self.adopt(stream),
            None => {
                // A plain response: appended, and the stream ends with it.
                self.held = false;
                self.next = None;
                self.render_bodies = false;
            }
        }
        match page.body {
            PageBody::Upstream(body) => self.copy(body).await,
            PageBody::Bytes(bytes) => self.write_body(bytes).await,
        }
    }

    /// Writes an upstream body as it arrives, waiting for the client to
    /// read.
    async fn copy(&mut self, mut body: Incoming) -> Result<(), End> {
        let mut ids = self.render_bodies.then(BodyIds::default);
        loop {
            let frame = tokio::select! {
                frame = body.frame() => frame,
                () = self.state.streams.stop.cancelled() => return Err(End::Shutdown),
                () = self.outbox.dropped() => return Err(End::Gone),
            };
            match frame {
                None => break,
                Some(Err(err)) => {
                    return Err(End::Failed(format!("the upstream's body failed: {err}")));
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        let data = match ids.as_mut() {
                            Some(ids) => ids.update(&data).map_err(body_filter_failed)?,
                            None => data,
                        };
                        self.write(data).await?;
                    }
                }
            }
        }
        if let Some(mut ids) = ids {
            let rest = ids.finish().map_err(body_filter_failed)?;
            self.write(rest).await?;
        }
        Ok(())
    }

    /// Writes an upstream body read whole.
    async fn write_body(&mut self, bytes: Bytes) -> Result<(), End> {
        let bytes = if self.render_bodies {
            let mut ids = BodyIds::default();
            let mut out = ids.update(&bytes).map_err(body_filter_failed)?.to_vec();
            out.extend_from_slice(&ids.finish().map_err(body_filter_failed)?);
            Bytes::from(out)
        } else {
            bytes
        };
        self.write(bytes).await
    }

    async fn write(&self, bytes: Bytes) -> Result<(), End> {
        tokio::select! {
            written = self.outbox.push_when_room(bytes) => written.map_err(|_| End::Gone),
            () = self.state.streams.stop.cancelled() => Err(End::Shutdown),
        }
    }

    /// Ends the response as `end` says; tells the upstream when the client
    /// is gone.
    fn finish(&mut self, end: End) {
        let metrics = &self.state.streams.metrics;
        let gone = match end {
            End::Closed => {
                add(&metrics.closed);
                false
            }
            End::Shutdown => {
                add(&metrics.shed);
                false
            }
            End::Failed(err) => {
                add(&metrics.errors);
                tracing::warn!(error = err, "GRIP stream ended");
                false
            }
            End::Gone => {
                add(&metrics.gone);
                tracing::debug!("stream client went away");
                true
            }
            End::Slow => {
                add(&metrics.slow_readers);
                tracing::info!(
                    limit = self.state.config.stream_buffer,
                    "a stream's client did not read; its connection is closed"
                );
                self.outbox.abort();
                if let Some(abort) = &self.origin.abort {
                    abort.cancel();
                }
                true
            }
        };
        if !gone {
            self.outbox.finish();
            return;
        }
        if let Some(link) = self.gone.take() {
            crate::gone::notify(&self.state, link);
        }
    }
}

/// Where a stream starts in a log whose kept `events` come after
/// `position`: after the item `prev_id` names, or before the item that
/// follows it; without a `prev-id`, at the log's end.
fn place(events: &[StoredEvent], position: Cursor, prev_id: Option<&str>) -> Placed {
    let end = events.last().map_or(position, |event| event.cursor);
    let Some(prev_id) = prev_id else {
        return Placed::At(end);
    };
    let items: Vec<Option<KeptItem<'_>>> = events
        .iter()
        .map(|event| KeptItem::decode(&event.event))
        .collect();
    let id_of = |k: usize| items[k].as_ref().and_then(|item| item.id);
    if let Some(k) = (0..events.len()).rev().find(|&k| id_of(k) == Some(prev_id)) {
        return Placed::At(events[k].cursor);
    }
    let follows = |k: usize| items[k].as_ref().and_then(|item| item.prev_id) == Some(prev_id);
    if let Some(k) = (0..events.len()).find(|&k| follows(k)) {
        return Placed::At(if k == 0 {
            position
        } else {
            events[k - 1].cursor
        });
    }
    Placed::Unknown {
        end,
        known: (0..events.len()).any(|k| id_of(k).is_some()),
    }
}

fn body_filter_failed(err: String) -> End {
    End::Failed(format!("build-id on the upstream's body: {err}"))
}

/// `every`, less up to a second (or a quarter of it) at random, so that
/// streams opened together do not all write or fetch together.
fn jittered(every: Duration) -> Duration {
    let spread = (every / 4).min(Duration::from_secs(1));
    every - spread.mul_f64(fastrand::f64())
}

async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use tower_longpoll::Event;

    use super::*;
    use crate::http_stream::StreamItem;

    fn kept(seq: u64, id: Option<&str>, prev_id: Option<&str>) -> StoredEvent {
        let item = StreamItem {
            id: id.map(Into::into),
            prev_id: prev_id.map(Into::into),
            meta: Vec::new(),
            action: Action::Send,
            content_filters: None,
            content: Bytes::from_static(b"x"),
        };
        StoredEvent {
            cursor: Cursor::new(1, seq),
            event: item.to_event(),
        }
    }

    #[test]
    fn a_stream_starts_where_its_prev_id_says() {
        let log = [
            kept(3, Some("a"), None),
            kept(4, Some("b"), Some("a")),
            kept(5, Some("c"), Some("b")),
        ];
        let start = Cursor::new(1, 2);
        let at = |prev: Option<&str>| match place(&log, start, prev) {
            Placed::At(cursor) => Some(cursor.seq()),
            Placed::Unknown { .. } => None,
        };
        assert_eq!(at(None), Some(5), "no prev-id: the end");
        assert_eq!(at(Some("b")), Some(4), "after b");
        assert_eq!(at(Some("c")), Some(5));
        // `z` is gone from the log but `a` says it followed it.
        let log2 = [kept(3, Some("a"), Some("z")), kept(4, Some("b"), Some("a"))];
        assert!(matches!(place(&log2, start, Some("z")), Placed::At(c) if c == start));
        assert!(matches!(
            place(&log, start, Some("q")),
            Placed::Unknown { end, known: true } if end.seq() == 5
        ));
        let anonymous = [StoredEvent {
            cursor: Cursor::new(1, 3),
            event: Event::new("not ours"),
        }];
        assert!(matches!(
            place(&anonymous, start, Some("q")),
            Placed::Unknown { known: false, .. }
        ));
        assert!(matches!(place(&[], start, None), Placed::At(c) if c == start));
    }

    #[test]
    fn jitter_stays_below_the_period() {
        for every in [1, 4, 20, 120] {
            let every = Duration::from_secs(every);
            let got = jittered(every);
            assert!(
                got <= every && got >= every - Duration::from_secs(1),
                "{got:?}"
            );
        }
    }
}

//! What every request handler shares: the settings, the hub, the upstream
//! client, the last published id of each channel, and the counters.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tower_longpoll::{Cursor, Hub};

use crate::config::Config;
use crate::routes::Routes;
use crate::stream::Streams;
use crate::upstream::Upstream;

pub struct State {
    pub config: Config,
    pub hub: Hub,
    pub upstream: Upstream,
    /// `--routes`: where each request goes; `None` with `--upstream`.
    pub routes: Option<Arc<Routes>>,
    pub channels: Channels,
    pub metrics: Metrics,
    /// GRIP streams: their log (a hub of its own), limits and counters.
    pub streams: Streams,
    /// WebSocket-over-HTTP sockets and their channels.
    pub sockets: crate::ws::Sockets,
}

/// The last id published on each channel, for `prev-id` checks: a hold
/// whose `prev-id` is not its channel's last id is behind.
pub struct Channels {
    map: Mutex<HashMap<Box<str>, Last>>,
    cap: usize,
}

/// A channel's last publish: the publisher's id (when it gave one) and the
/// cursor the hub gave the event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Last {
    pub id: Option<Arc<str>>,
    pub cursor: Cursor,
}

impl Channels {
    /// Remembers at most `cap` channels; beyond, an arbitrary one is
    /// forgotten (its holds then wait from the delivery position).
    pub fn new(cap: usize) -> Self {
        Channels {
            map: Mutex::default(),
            cap: cap.max(1),
        }
    }

    pub fn last(&self, channel: &str) -> Option<Last> {
        self.lock().get(channel).cloned()
    }

    /// Records a publish; an older one finishing late changes nothing.
    pub fn published(&self, channel: &str, id: Option<&str>, cursor: Cursor) {
        let mut map = self.lock();
        if let Some(last) = map.get(channel) {
            if last.cursor.partial_cmp(&cursor) == Some(std::cmp::Ordering::Greater) {
                return;
            }
        } else if map.len() >= self.cap {
            let evicted = map.keys().next().cloned();
            if let Some(evicted) = evicted {
                map.remove(&evicted);
            }
        }
        map.insert(
            channel.into(),
            Last {
                id: id.map(Arc::from),
                cursor,
            },
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Last>> {
        self.map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Counters for `/metrics`, besides the hub's own.
#[derive(Default)]
pub struct Metrics {
    pub proxied: AtomicU64,
    pub upstream_unreachable: AtomicU64,
    pub no_route: AtomicU64,
    pub upstream_timeouts: AtomicU64,
    pub upgrades: AtomicU64,
    pub holds: AtomicU64,
    pub holding: AtomicU64,
    pub hold_events: AtomicU64,
    pub hold_timeouts: AtomicU64,
    pub hold_retries: AtomicU64,
    pub hold_shed: AtomicU64,
    pub hold_refused: AtomicU64,
    pub gone_posts: AtomicU64,
    pub bad_instructions: AtomicU64,
    pub published_items: AtomicU64,
    pub publish_bad_requests: AtomicU64,
    pub publish_unauthorized: AtomicU64,
}

pub fn add(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl State {
    /// Prometheus text exposition.
    pub fn render_metrics(&self) -> String {
        let stats = self.hub.stats();
        let m = &self.metrics;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let mut out = String::with_capacity(4096);
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            );
        };
        metric(
            "longpoll_waiters",
            "gauge",
            "Waiters parked now: --route polls, and one per channel of each GRIP hold.",
            stats.parked as u64,
        );
        metric(
            "longpoll_ids",
            "gauge",
            "Client ids and channels with an event log.",
            stats.ids as u64,
        );
        metric(
            "longpoll_kept_events",
            "gauge",
            "Events kept in all logs.",
            stats.kept_events as u64,
        );
        metric(
            "longpoll_kept_bytes",
            "gauge",
            "Bytes of events kept in all logs.",
            stats.kept_bytes as u64,
        );
        metric(
            "longpoll_events_published_total",
            "counter",
            "Events published.",
            stats.published,
        );
        metric(
            "longpoll_deliveries_total",
            "counter",
            "Event responses handed to a connection: --route polls and GRIP holds.",
            stats.delivered,
        );
        metric(
            "longpoll_timeouts_total",
            "counter",
            "--route polls answered with a keepalive.",
            stats.timed_out,
        );
        metric(
            "longpoll_cancellations_total",
            "counter",
            "--route polls, and GRIP hold event responses, whose client went away first.",
            stats.cancelled,
        );
        metric(
            "longpoll_rejections_total",
            "counter",
            "--route polls refused for bad input or limits.",
            stats.rejected,
        );
        metric(
            "longpoll_shed_total",
            "counter",
            "--route polls answered 503 during shutdown.",
            stats.shed,
        );
        metric(
            "longpoll_gateway_proxied_total",
            "counter",
            "Requests forwarded to the upstream (retries included).",
            get(&m.proxied),
        );
        metric(
            "longpoll_gateway_upstream_unreachable_total",
            "counter",
            "Requests answered 502: upstream unreachable or failed.",
            get(&m.upstream_unreachable),
        );
        metric(
            "longpoll_gateway_upstream_timeouts_total",
            "counter",
            "Requests answered 504: upstream too slow.",
            get(&m.upstream_timeouts),
        );
        metric(
            "longpoll_gateway_upgrades_total",
            "counter",
            "Upgraded connections: WebSockets passed through or ended here (over_http).",
            get(&m.upgrades),
        );
        metric(
            "longpoll_gateway_grip_holds_total",
            "counter",
            "GRIP holds started.",
            get(&m.holds),
        );
        metric(
            "longpoll_gateway_grip_holding",
            "gauge",
            "GRIP holds waiting now.",
            get(&m.holding),
        );
        metric(
            "longpoll_gateway_grip_hold_events_total",
            "counter",
            "GRIP holds answered with a published response.",
            get(&m.hold_events),
        );
        metric(
            "longpoll_gateway_grip_hold_timeouts_total",
            "counter",
            "GRIP holds answered with the upstream's response on timeout.",
            get(&m.hold_timeouts),
        );
        metric(
            "longpoll_gateway_grip_retries_total",
            "counter",
            "Requests retried with Grip-Last because a prev-id was behind.",
            get(&m.hold_retries),
        );
        metric(
            "longpoll_gateway_grip_hold_shed_total",
            "counter",
            "GRIP holds answered 503 during shutdown.",
            get(&m.hold_shed),
        );
        metric(
            "longpoll_gateway_grip_hold_refused_total",
            "counter",
            "GRIP holds refused by limits or store (503).",
            get(&m.hold_refused),
        );
        metric(
            "longpoll_gateway_grip_gone_posts_total",
            "counter",
            "Grip-Link rel=gone notifications sent.",
            get(&m.gone_posts),
        );
        metric(
            "longpoll_gateway_grip_bad_instructions_total",
            "counter",
            "Upstream GRIP instructions that could not be followed (502).",
            get(&m.bad_instructions),
        );
        metric(
            "longpoll_gateway_published_items_total",
            "counter",
            "Items published through the publish API.",
            get(&m.published_items),
        );
        metric(
            "longpoll_gateway_publish_bad_requests_total",
            "counter",
            "Publish calls refused with 400.",
            get(&m.publish_bad_requests),
        );
        metric(
            "longpoll_gateway_publish_unauthorized_total",
            "counter",
            "Publish calls refused with 401.",
            get(&m.publish_unauthorized),
        );
        if let Some(routes) = &self.routes {
            metric(
                "longpoll_gateway_no_route_total",
                "counter",
                "Requests answered 502 because no route of the routes file matched.",
                get(&m.no_route),
            );
            metric(
                "longpoll_gateway_routes",
                "gauge",
                "Routes in force from the routes file.",
                routes.table().all.len() as u64,
            );
            metric(
                "longpoll_gateway_routes_reloads_total",
                "counter",
                "Times the changed routes file was read again and put in force.",
                get(&routes.reloads.loaded),
            );
            metric(
                "longpoll_gateway_routes_reload_errors_total",
                "counter",
                "Times the changed routes file did not parse (the routes in force stayed).",
                get(&routes.reloads.failed),
            );
        }
        let sockets = &self.sockets;
        metric(
            "longpoll_gateway_websockets",
            "gauge",
            "WebSocket-over-HTTP sockets open now.",
            get(&sockets.open),
        );
        metric(
            "longpoll_gateway_ws_messages_delivered_total",
            "counter",
            "ws-message publishes handed to a socket.",
            get(&sockets.delivered),
        );
        metric(
            "longpoll_gateway_ws_slow_clients_total",
            "counter",
            "Sockets closed for falling too far behind their publishes.",
            get(&sockets.slow),
        );
        self.streams.render_metrics(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_publish_wins_and_the_cap_holds() {
        let channels = Channels::new(2);
        channels.published("a", Some("2"), Cursor::new(1, 2));
        channels.published("a", Some("1"), Cursor::new(1, 1));
        assert_eq!(channels.last("a").unwrap().id.as_deref(), Some("2"));
        channels.published("a", None, Cursor::new(9, 1));
        assert_eq!(channels.last("a").unwrap().cursor, Cursor::new(9, 1));
        channels.published("b", Some("x"), Cursor::new(1, 1));
        channels.published("c", Some("y"), Cursor::new(1, 1));
        let kept = ["a", "b", "c"]
            .iter()
            .filter(|name| channels.last(name).is_some())
            .count();
        assert_eq!(kept, 2);
        assert!(channels.last("c").is_some());
    }
}

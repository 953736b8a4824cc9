//! What every clone of the layer and its services share: the configuration
//! and the way a poll is refused. It sits below the layer, the service and
//! the response future, which all use it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::Response;

use crate::body::ReplyBody;
use crate::client_id::ClientId;
use crate::error::{Forbidden, Rejection};
use crate::hub::{Count, Hub, WaitError, WaitLimits};
use crate::keepalive::KeepAlive;
use crate::response;
use crate::route::{PathParams, RequestHead, Route};

/// Decides whether a request may poll an id.
pub(crate) type Authorize =
    dyn for<'a> Fn(&RequestHead<'a>, &str) -> Result<(), Forbidden> + Send + Sync;

/// The configuration every clone of the layer and its services share.
pub(crate) struct Shared {
    pub(crate) hub: Hub,
    pub(crate) routes: Box<[Route]>,
    pub(crate) client_id: ClientId,
    pub(crate) authorize: Option<Arc<Authorize>>,
    pub(crate) timeout: Duration,
    pub(crate) max_timeout: Duration,
    pub(crate) jitter: f64,
    pub(crate) keepalive: KeepAlive,
    pub(crate) limits: WaitLimits,
    pub(crate) max_batch: usize,
    pub(crate) retry_after_max: u64,
    pub(crate) max_request_body: usize,
}

impl Shared {
    /// The first route a request matches, with its path parameters.
    pub(crate) fn match_route<'a, B>(
        &'a self,
        request: &'a http::Request<B>,
    ) -> Option<PathParams<'a>> {
        self.routes.iter().find_map(|route| route.matches(request))
    }

    /// How long a poll waits. The default timeout is spread evenly over
    /// ± jitter; a timeout the client asked for is capped by the maximum and
    /// only ever shortened by the jitter, never lengthened.
    pub(crate) fn wait_time(&self, requested: Option<Duration>) -> Duration {
        match requested {
            None => self
                .timeout
                .mul_f64(1.0 + self.jitter * (2.0 * fastrand::f64() - 1.0)),
            Some(requested) => requested
                .min(self.max_timeout)
                .mul_f64(1.0 - self.jitter * fastrand::f64()),
        }
    }

    /// Refuses a poll: counts it, logs it, answers it.
    pub(crate) fn refuse(&self, rejection: Rejection) -> Response<ReplyBody> {
        self.hub.count(if rejection == Rejection::ShuttingDown {
            Count::Shed
        } else {
            Count::Rejected
        });
        tracing::debug!(status = rejection.status().as_u16(), reason = %rejection, "poll refused");
        response::rejection(&rejection, self.retry_after_max)
    }

    /// Refuses a poll whose wait could not park or read.
    pub(crate) fn wait_failed(&self, id: &str, err: WaitError) -> Response<ReplyBody> {
        let rejection = match err {
            WaitError::TooManyForId => Rejection::TooManyForId {
                limit: self.limits.per_id(),
            },
            WaitError::TooManyParked => Rejection::TooManyParked,
            WaitError::TooManyIds => Rejection::TooManyIds,
            WaitError::ShuttingDown => Rejection::ShuttingDown,
            WaitError::InvalidId(invalid) => Rejection::InvalidId(invalid),
            WaitError::Store(err) => {
                tracing::warn!(client_id = id, error = %err, "reading the event log failed");
                Rejection::StoreUnavailable
            }
        };
        self.refuse(rejection)
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LongPollLayer")
            .field("routes", &self.routes)
            .field("client_id", &self.client_id)
            .field("authorize", &self.authorize.is_some())
            .field("timeout", &self.timeout)
            .field("max_timeout", &self.max_timeout)
            .field("jitter", &self.jitter)
            .field("keepalive", &self.keepalive)
            .field("limits", &self.limits)
            .field("max_batch", &self.max_batch)
            .finish()
    }
}

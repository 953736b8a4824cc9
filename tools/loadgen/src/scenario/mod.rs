//! The scenarios: each runs one measurement and returns its JSON line.

mod churn;
mod fanout;
mod grip_backend;
mod hold;
mod unicast;

pub(crate) use churn::churn;
pub(crate) use fanout::fanout;
pub(crate) use grip_backend::grip_backend;
pub(crate) use hold::hold;
pub(crate) use unicast::unicast;

//! Publishes events carrying latency markers.

use crate::Args;
use crate::clock::{log, now_ns};
use crate::h1::H1;
use crate::target::{Target, parse_url, render};

pub(crate) struct Publisher {
    pub(crate) conn: H1,
    pub(crate) target: Target,
    pub(crate) body: String,
    pub(crate) headers: Vec<(String, String)>,
}

impl Publisher {
    pub(crate) fn new(args: &Args) -> Self {
        let target = parse_url(&args.pub_url);
        let headers = args
            .pub_headers
            .iter()
            .map(|h| {
                let (name, value) = h.split_once(':').expect("--pub-header Name: value");
                (name.trim().to_owned(), value.trim().to_owned())
            })
            .collect();
        Publisher {
            conn: H1::new(target.clone(), 0),
            target,
            body: args.pub_body.clone(),
            headers,
        }
    }

    /// Publishes message `seq` to `id`; true when the server took it.
    pub(crate) async fn publish(&mut self, id: &str, seq: u64) -> bool {
        let msg = format!("lg:{seq}:{}", now_ns());
        let path = render(&self.target.path, id, "");
        let body = render(&self.body, id, &msg);
        match self
            .conn
            .request("POST", &path, &self.headers, body.as_bytes())
            .await
        {
            Ok(reply) if (200..300).contains(&reply.status) => true,
            Ok(reply) => {
                log(format!(
                    "publish to {id}: status {} {}",
                    reply.status,
                    String::from_utf8_lossy(&reply.body).trim()
                ));
                false
            }
            Err(err) => {
                log(format!("publish to {id}: {err}"));
                false
            }
        }
    }
}

// ---------------------------------------------------------------- statistics

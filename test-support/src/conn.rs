//! A small HTTP/1.1 client over raw sockets, so that tests control FIN and
//! RST exactly. Shared with the soak tool (tools/soak), so it depends on
//! nothing but tokio, bytes, http, httparse and socket2.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any wait in a test may take before it fails: generous, because
/// a loaded 2-core CI machine is slow, and only reached when a test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Awaits `future` for at most [`PATIENCE`].
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A response as read off the socket.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }

    /// The cursor in the ETag, without its quotes.
    pub fn cursor(&self) -> String {
        let etag = self.header("etag").expect("an ETag");
        etag.trim_matches('"').to_owned()
    }
}

/// One HTTP/1.1 connection driven by hand.
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Conn {
        let stream = within("connect", TcpStream::connect(addr)).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            buf: BytesMut::with_capacity(4096),
        }
    }

    /// Sends a request with an empty body.
    pub async fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) {
        self.send_with_body(method, path, headers, b"").await;
    }

    /// Sends a request with a body (a `Content-Length` is added when it is not empty).
    pub async fn send_with_body(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) {
        let mut head = format!("{method} {path} HTTP/1.1\r\nhost: test\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() {
            head.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.write_all(&bytes).await.unwrap();
    }

    /// Writes bytes as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads one response; `head_request` when it answers a HEAD.
    pub async fn response(&mut self, head_request: bool) -> Reply {
        within("a response", self.read_response(head_request))
            .await
            .expect("a complete response")
    }

    /// Reads one response, or `None` if the connection closes first.
    pub async fn read_response(&mut self, head_request: bool) -> Option<Reply> {
        let (status, headers, head_len) = loop {
            let mut parsed_headers = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut parsed_headers);
            if let httparse::Status::Complete(len) =
                parsed.parse(&self.buf).expect("a valid response head")
            {
                let status = StatusCode::from_u16(parsed.code.unwrap()).unwrap();
                let mut headers = HeaderMap::new();
                for header in parsed.headers.iter() {
                    headers.append(
                        HeaderName::from_bytes(header.name.as_bytes()).unwrap(),
                        HeaderValue::from_bytes(header.value).unwrap(),
                    );
                }
                break (status, headers, len);
            }
            if !self.fill().await {
                return None;
            }
        };
        self.buf.advance(head_len);
        let no_body = head_request
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
            || status.is_informational();
        let body = if no_body {
            Bytes::new()
        } else if let Some(length) = headers.get("content-length") {
            let length: usize = length.to_str().unwrap().parse().unwrap();
            while self.buf.len() < length {
                if !self.fill().await {
                    return None;
                }
            }
            self.buf.split_to(length).freeze()
        } else if headers
            .get("transfer-encoding")
            .is_some_and(|te| te.to_str().unwrap().contains("chunked"))
        {
            self.read_chunked().await?
        } else {
            while self.fill().await {}
            self.buf.split().freeze()
        };
        Some(Reply {
            status,
            headers,
            body,
        })
    }

    async fn read_chunked(&mut self) -> Option<Bytes> {
        let mut body = BytesMut::new();
        loop {
            let line_end = loop {
                if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    break pos;
                }
                if !self.fill().await {
                    return None;
                }
            };
            let size_text = std::str::from_utf8(&self.buf[..line_end]).unwrap();
            let size =
                usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
            self.buf.advance(line_end + 2);
            while self.buf.len() < size + 2 {
                if !self.fill().await {
                    return None;
                }
            }
            if size == 0 {
                // No trailers are sent by the servers under test.
                self.buf.advance(2);
                return Some(body.freeze());
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.advance(size + 2);
        }
    }

    /// Reads more bytes; false at end of stream or on a reset.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Waits until some bytes of a response have arrived (or the stream ends).
    pub async fn read_some(&mut self) {
        if self.buf.is_empty() {
            within("some bytes", self.fill()).await;
        }
    }

    /// Whether the server closed the connection (reads end of stream).
    pub async fn closed_by_server(&mut self) -> bool {
        within("the server to close", async { !self.fill().await }).await
    }

    /// Half-closes: sends a FIN but keeps reading.
    pub async fn fin(&mut self) {
        self.stream.shutdown().await.unwrap();
    }

    /// Aborts the connection with a RST.
    pub fn reset(self) {
        let socket = socket2::SockRef::from(&self.stream);
        socket.set_linger(Some(Duration::ZERO)).unwrap();
        drop(self.stream);
    }
}

/// One request on a fresh connection.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut conn = Conn::connect(addr).await;
    conn.send(method, path, headers).await;
    conn.response(method == "HEAD").await
}

/// `GET path` on a fresh connection.
pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, &[]).await
}

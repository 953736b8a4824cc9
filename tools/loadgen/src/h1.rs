//! A minimal HTTP/1.1 client connection over a chosen loopback source address.

use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::target::Target;

/// The parts of a response the scenarios look at.
#[derive(Debug, Default)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) etag: Option<String>,
    pub(crate) last_modified: Option<String>,
    pub(crate) body: Vec<u8>,
    pub(crate) close: bool,
}

pub(crate) static NEXT_SOURCE: AtomicUsize = AtomicUsize::new(0);

pub(crate) async fn connect(addr: SocketAddr, sources: u8) -> io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    if sources > 0 {
        let n = NEXT_SOURCE.fetch_add(1, Ordering::Relaxed) % sources as usize;
        let source = Ipv4Addr::new(127, 0, 0, 2 + n as u8);
        // Each source address has its own range of ephemeral ports.
        socket.bind(&SocketAddr::new(IpAddr::V4(source), 0).into())?;
    }
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    let socket = TcpSocket::from_std_stream(std::net::TcpStream::from(socket));
    socket.connect(addr).await
}

/// An HTTP/1.1 client connection, reconnecting after `Connection: close`.
pub(crate) struct H1 {
    pub(crate) target: Target,
    pub(crate) sources: u8,
    pub(crate) stream: Option<TcpStream>,
    pub(crate) buf: Vec<u8>,
}

impl H1 {
    pub(crate) fn new(target: Target, sources: u8) -> Self {
        H1 {
            target,
            sources,
            stream: None,
            buf: Vec::new(),
        }
    }

    pub(crate) async fn ensure(&mut self) -> io::Result<()> {
        if self.stream.is_none() {
            self.stream = Some(connect(self.target.addr, self.sources).await?);
            self.buf.clear();
        }
        Ok(())
    }

    /// Sends a request; the response is read by [`H1::read_reply`].
    pub(crate) async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> io::Result<()> {
        self.ensure().await?;
        let mut head = String::with_capacity(256);
        let _ = write!(
            head,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n",
            self.target.authority
        );
        for (name, value) in headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        if method != "GET" || !body.is_empty() {
            let _ = write!(head, "Content-Length: {}\r\n", body.len());
        }
        head.push_str("\r\n");
        let stream = self.stream.as_mut().expect("connected");
        if body.is_empty() {
            stream.write_all(head.as_bytes()).await
        } else {
            let mut all = head.into_bytes();
            all.extend_from_slice(body);
            stream.write_all(&all).await
        }
    }

    pub(crate) async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> io::Result<Reply> {
        self.send(method, path, headers, body).await?;
        self.read_reply().await
    }

    pub(crate) async fn fill(&mut self) -> io::Result<()> {
        let stream = self.stream.as_mut().expect("connected");
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(2048);
        }
        let n = stream.read_buf(&mut self.buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    pub(crate) async fn read_reply(&mut self) -> io::Result<Reply> {
        let result = self.read_reply_inner().await;
        match &result {
            Ok(reply) if !reply.close => {}
            _ => {
                self.stream = None;
                self.buf.clear();
            }
        }
        result
    }

    pub(crate) async fn read_reply_inner(&mut self) -> io::Result<Reply> {
        let (mut reply, head_len, length, chunked) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.buf) {
                Ok(httparse::Status::Complete(head_len)) => {
                    let mut reply = Reply {
                        status: response.code.unwrap_or(0),
                        ..Reply::default()
                    };
                    let mut length = None;
                    let mut chunked = false;
                    for header in response.headers.iter() {
                        let value = String::from_utf8_lossy(header.value).into_owned();
                        match header.name.to_ascii_lowercase().as_str() {
                            "etag" => reply.etag = Some(value),
                            "last-modified" => reply.last_modified = Some(value),
                            "content-length" => length = value.trim().parse::<usize>().ok(),
                            "transfer-encoding" => {
                                chunked = value.to_ascii_lowercase().contains("chunked")
                            }
                            "connection" => reply.close = value.eq_ignore_ascii_case("close"),
                            _ => {}
                        }
                    }
                    if response.version == Some(0) {
                        reply.close = true;
                    }
                    break (reply, head_len, length, chunked);
                }
                Ok(httparse::Status::Partial) => self.fill().await?,
                Err(err) => return Err(io::Error::new(io::ErrorKind::InvalidData, err)),
            }
        };
        self.buf.drain(..head_len);
        let no_body = reply.status == 204 || reply.status == 304 || reply.status < 200;
        if no_body {
        } else if chunked {
            loop {
                let line_end = loop {
                    if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break at;
                    }
                    self.fill().await?;
                };
                let line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidData, "bad chunk size")
                })?;
                while self.buf.len() < line_end + 2 + size + 2 {
                    self.fill().await?;
                }
                reply
                    .body
                    .extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
                self.buf.drain(..line_end + 2 + size + 2);
                if size == 0 {
                    break;
                }
            }
        } else if let Some(length) = length {
            while self.buf.len() < length {
                self.fill().await?;
            }
            reply.body = self.buf.drain(..length).collect();
        } else {
            reply.close = true;
            loop {
                match self.fill().await {
                    Ok(()) => {}
                    Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => break,
                    Err(err) => return Err(err),
                }
            }
            reply.body = std::mem::take(&mut self.buf);
        }
        Ok(reply)
    }

    /// Aborts the connection with a RST.
    pub(crate) fn reset(&mut self) {
        if let Some(stream) = self.stream.take() {
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        }
    }
}

// ---------------------------------------------------------------- subscribers

//! A server's connection, with or without TLS.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::Reloading;

/// How long a connection has to finish its TLS handshake (or to send its first bytes).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection accepted (or dialled) over TCP, in the clear or inside TLS.
pub enum Conn {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS accepted by this server.
    Server(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// TLS dialled by this process.
    Client(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Conn {
    /// The certificate the other end presented, if any (its own first).
    pub fn peer_certificate(&self) -> Option<&CertificateDer<'static>> {
        let certificates = match self {
            Conn::Plain(_) => None,
            Conn::Server(stream) => stream.get_ref().1.peer_certificates(),
            Conn::Client(stream) => stream.get_ref().1.peer_certificates(),
        };
        certificates.and_then(|chain| chain.first())
    }

    /// The underlying TCP connection.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(stream) => stream,
            Conn::Server(stream) => stream.get_ref().0,
            Conn::Client(stream) => stream.get_ref().0,
        }
    }

    /// Whether it is inside TLS.
    pub fn is_tls(&self) -> bool {
        !matches!(self, Conn::Plain(_))
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Conn::Server(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
            Conn::Client(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Conn::Server(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
            Conn::Client(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Conn::Server(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
            Conn::Client(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(stream) => stream.is_write_vectored(),
            Conn::Server(stream) => stream.is_write_vectored(),
            Conn::Client(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Conn::Server(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
            Conn::Client(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Conn::Server(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
            Conn::Client(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Whether `bytes` (fewer than three) could begin a TLS handshake record.
fn looks_like_tls_start(bytes: &[u8]) -> bool {
    bytes.first().is_none_or(|&byte| byte == 0x16) && bytes.get(1).is_none_or(|&byte| byte == 0x03)
}

/// Whether `bytes`, the first a client sent, begin a TLS handshake (a handshake record of
/// TLS 1.x): a plaintext port uses it to say why it refuses the connection.
pub fn looks_like_tls(bytes: &[u8]) -> bool {
    bytes.len() >= 3 && bytes[0] == 0x16 && bytes[1] == 0x03 && bytes[2] <= 0x04
}

/// A connection accepted on a port with `tls` (a handshake) or without (plain TCP), with a
/// clear reason when the other end speaks the wrong one.
pub async fn accept(
    tcp: TcpStream,
    tls: Option<&Reloading<rustls::ServerConfig>>,
) -> Result<Conn, String> {
    // The first three bytes (a TLS record header), which may arrive in pieces.
    let mut first = [0u8; 3];
    let peeked = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        loop {
            let count = tcp.peek(&mut first).await?;
            if count == 0 || count >= first.len() || !looks_like_tls_start(&first[..count]) {
                return Ok::<usize, std::io::Error>(count);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    let Some(tls) = tls else {
        if let Ok(Ok(count)) = peeked {
            if looks_like_tls(&first[..count]) {
                return Err("a TLS handshake on a port that serves plaintext (this server \
                            has no certificate for it: see --cert-file)"
                    .to_string());
            }
        }
        return Ok(Conn::Plain(tcp));
    };
    match peeked {
        Err(_) => return Err("no TLS handshake within 10 s".to_string()),
        Ok(Err(error)) => return Err(format!("the connection failed: {error}")),
        Ok(Ok(0)) => return Err("closed before a TLS handshake".to_string()),
        Ok(Ok(count)) if !looks_like_tls(&first[..count]) => {
            return Err("plaintext on a TLS port (the client must use TLS)".to_string());
        }
        Ok(Ok(_)) => {}
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => Ok(Conn::Server(Box::new(stream))),
        Ok(Err(error)) => Err(format!("TLS handshake refused: {error}")),
        Err(_) => Err("the TLS handshake took longer than 10 s".to_string()),
    }
}

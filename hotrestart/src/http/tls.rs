//! HTTPS: rustls behind [`serve`](super::serve), with the handshake off the accept loop and
//! session tickets that survive a restart.
//!
//! - [`TlsListener`] wraps a listener obtained by name like any other (`hot.tcp("https", …)`).
//!   `accept` returns at once with a connection whose handshake runs in that connection's own
//!   task, bounded by its own timeout: a client that connects and sends nothing costs only its
//!   own connection, and a failed handshake is logged as what it is.
//! - [`server_config`] loads the certificate chain and key (PEM), checks that they match, and
//!   offers ALPN `h2` and `http/1.1`. Called in the successor's initialisation, before
//!   `hot.ready`, it makes a restart a certificate reload: a successor whose certificate or key
//!   is unreadable or does not match fails there, and the old process serves on (rollback).
//! - The session-ticket keys are the process's [`TicketKeys`] (AES-256-GCM, rotated every
//!   6 hours, the previous key kept to decrypt): they travel to the successor with the state
//!   and are written to the state file (mode 0600) on a graceful exit, so a client resuming
//!   after a restart gets an abbreviated handshake. They never appear in logs.
//!
//! TLS connections are not handed over (that needs kernel TLS, which this library does not
//! use): at a restart they end as in a drain — `connection: close` after the response in
//! flight, GOAWAY for HTTP/2 — and their clients reconnect, resuming their sessions.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;

use super::Accept;
use crate::error::{Error, Result};
use crate::Hot;

/// Default time a client has to complete its handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a ticket key encrypts new tickets; the previous one still decrypts for as long.
const ROTATION: Duration = Duration::from_secs(6 * 3600);

/// A listener whose connections are TLS streams (see the module's docs).
pub struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("local_addr", &self.tcp.local_addr().ok())
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// TLS on `tcp` (a listener of `hot`'s, by name) with `config` (from [`server_config`], or
    /// your own). The handshake timeout is 10 s, or the operator's
    /// `HOTRESTART_TLS_HANDSHAKE_TIMEOUT`.
    pub fn new(hot: &Hot, tcp: tokio::net::TcpListener, config: Arc<rustls::ServerConfig>) -> Self {
        let handshake_timeout = hot
            .options()
            .tls_handshake_timeout
            .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT);
        TlsListener {
            tcp,
            acceptor: tokio_rustls::TlsAcceptor::from(config),
            handshake_timeout,
        }
    }

    /// How long a client has to complete its handshake, in place of the default.
    pub fn handshake_timeout(mut self, limit: Duration) -> Self {
        self.handshake_timeout = limit;
        self
    }
}

impl Accept for TlsListener {
    type Io = TlsIo;

    async fn accept(&mut self) -> io::Result<TlsIo> {
        let (tcp, peer) = self.tcp.accept().await?;
        let _ = tcp.set_nodelay(true);
        let handshake = tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(tcp));
        Ok(TlsIo::Handshaking {
            handshake: Box::pin(handshake),
            peer,
        })
    }
}

type Handshake = Pin<Box<tokio::time::Timeout<tokio_rustls::Accept<TcpStream>>>>;

/// A TLS connection: its handshake runs on its first read or write, in its own task.
pub enum TlsIo {
    #[doc(hidden)]
    Handshaking {
        handshake: Handshake,
        peer: std::net::SocketAddr,
    },
    #[doc(hidden)]
    Ready(Box<TlsStream<TcpStream>>),
    #[doc(hidden)]
    Failed,
}

impl std::fmt::Debug for TlsIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsIo::Handshaking { .. } => "TlsIo::Handshaking",
            TlsIo::Ready(_) => "TlsIo::Ready",
            TlsIo::Failed => "TlsIo::Failed",
        })
    }
}

impl TlsIo {
    /// Drives the handshake; `Ready(Ok)` once the stream is usable.
    fn poll_handshake(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<&mut TlsStream<TcpStream>>> {
        if let TlsIo::Handshaking { handshake, peer } = self {
            let peer = *peer;
            match handshake.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(Ok(stream))) => *self = TlsIo::Ready(Box::new(stream)),
                Poll::Ready(Ok(Err(e))) => {
                    tracing::debug!(%peer, "TLS handshake failed: {e}");
                    *self = TlsIo::Failed;
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Err(_)) => {
                    tracing::debug!(%peer, "TLS handshake timed out: connection closed");
                    *self = TlsIo::Failed;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "TLS handshake timed out",
                    )));
                }
            }
        }
        match self {
            TlsIo::Ready(stream) => Poll::Ready(Ok(stream)),
            _ => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the TLS handshake failed",
            ))),
        }
    }
}

impl AsyncRead for TlsIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().poll_handshake(cx) {
            Poll::Ready(Ok(stream)) => Pin::new(stream).poll_read(cx, buf),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().poll_handshake(cx) {
            Poll::Ready(Ok(stream)) => Pin::new(stream).poll_write(cx, buf),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TlsIo::Ready(stream) => Pin::new(stream).poll_flush(cx),
            _ => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TlsIo::Ready(stream) => Pin::new(stream).poll_shutdown(cx),
            _ => Poll::Ready(Ok(())),
        }
    }
}

/// A server configuration from PEM files: the certificate chain and its private key, checked
/// to match; ALPN `h2` and `http/1.1`; session tickets encrypted with `hot`'s [`TicketKeys`].
/// An unreadable or mismatched pair is an [`Error::Tls`] naming the file: call this before
/// `hot.ready`, so that a successor with a broken certificate fails before it takes over.
pub fn server_config(hot: &Hot, cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>> {
    let tls = |path: &Path, reason: String| Error::Tls {
        path: path.to_owned(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| tls(cert, format!("cannot read a PEM certificate chain: {e}")))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| tls(cert, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(tls(cert, "no certificate in the file".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| tls(key, format!("cannot read a PEM private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signing = provider
        .key_provider
        .load_private_key(private.clone_key())
        .map_err(|e| tls(key, format!("not a usable private key: {e}")))?;
    rustls::sign::CertifiedKey::new(chain.clone(), signing)
        .keys_match()
        .map_err(|e| {
            tls(
                key,
                format!(
                    "the key does not match the certificate {}: {e}",
                    cert.display()
                ),
            )
        })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| tls(cert, e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ticketer = hot.ticket_keys();
    // TLS 1.3 sends tickets after the handshake: two, as rustls does by default.
    Ok(Arc::new(config))
}

/// The session-ticket keys of this process: AES-256-GCM, the current one encrypting new
/// tickets and the previous one still decrypting, rotated every 6 hours. Handed to the successor
/// with the state and saved in the state file, so sessions resume across restarts.
pub struct TicketKeys {
    keys: RwLock<Keys>,
    random: SystemRandom,
}

/// The key material, as it travels (never logged: `Debug` prints ids only).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Keys {
    current: Key,
    previous: Option<Key>,
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Key {
    id: u32,
    secret: [u8; 32],
    /// Seconds since the epoch when it began encrypting.
    since: u64,
}

impl std::fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.keys.read().unwrap();
        f.debug_struct("TicketKeys")
            .field("current", &keys.current.id)
            .field("previous", &keys.previous.as_ref().map(|k| k.id))
            .finish()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl TicketKeys {
    pub(crate) fn new() -> Self {
        let random = SystemRandom::new();
        let current = Key::fresh(&random, 0);
        TicketKeys {
            keys: RwLock::new(Keys {
                current,
                previous: None,
            }),
            random,
        }
    }

    /// The keys, for the snapshot.
    pub(crate) fn export(&self) -> Keys {
        self.keys.read().unwrap().clone()
    }

    /// The previous process's keys replace this one's — those still within their lifetime
    /// (a state file read after a long stop brings back none that expired).
    pub(crate) fn import(&self, keys: Keys) {
        let mut ours = self.keys.write().unwrap();
        *ours = keys;
        self.roll(&mut ours);
    }

    /// Rolls the keys forward to now: a current key older than [`ROTATION`] becomes the
    /// previous one (or, older than twice that, is dropped with it), and a fresh one encrypts;
    /// a previous key past its lifetime is dropped. Runs under the write lock, so two threads
    /// crossing the boundary at once roll once.
    fn roll(&self, keys: &mut Keys) {
        let now = now();
        let age = |k: &Key| now.saturating_sub(k.since);
        if age(&keys.current) >= ROTATION.as_secs() {
            let next = Key::fresh(&self.random, keys.current.id.wrapping_add(1));
            let old = std::mem::replace(&mut keys.current, next);
            keys.previous = (age(&old) < 2 * ROTATION.as_secs()).then_some(old);
        }
        if keys
            .previous
            .as_ref()
            .is_some_and(|k| age(k) >= 2 * ROTATION.as_secs())
        {
            keys.previous = None;
        }
    }

    fn rotate_if_due(&self) {
        let due = {
            let keys = self.keys.read().unwrap();
            let now = now();
            now.saturating_sub(keys.current.since) >= ROTATION.as_secs()
                || keys
                    .previous
                    .as_ref()
                    .is_some_and(|k| now.saturating_sub(k.since) >= 2 * ROTATION.as_secs())
        };
        if due {
            // Checked again under the write lock (`roll` decides from the keys it sees).
            self.roll(&mut self.keys.write().unwrap());
        }
    }
}

impl Key {
    fn fresh(random: &SystemRandom, id: u32) -> Key {
        let mut secret = [0u8; 32];
        random
            .fill(&mut secret)
            .expect("the system's random source");
        Key {
            id,
            secret,
            since: now(),
        }
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.secret).expect("a 32-byte key"))
    }
}

impl rustls::server::ProducesTickets for TicketKeys {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        (2 * ROTATION).as_secs() as u32
    }

    /// `key id (4) | nonce (12) | ciphertext and tag`.
    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.rotate_if_due();
        let key = self.keys.read().unwrap().current.clone();
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).ok()?;
        let mut sealed = plain.to_vec();
        key.aead()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key.id.to_be_bytes()),
                &mut sealed,
            )
            .ok()?;
        let mut out = Vec::with_capacity(4 + NONCE_LEN + sealed.len());
        out.extend_from_slice(&key.id.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Some(out)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        // An idle server's keys expire too: no ticket outlives its lifetime.
        self.rotate_if_due();
        let id = u32::from_be_bytes(cipher.get(..4)?.try_into().ok()?);
        let nonce: [u8; NONCE_LEN] = cipher.get(4..4 + NONCE_LEN)?.try_into().ok()?;
        let keys = self.keys.read().unwrap();
        let key = [Some(&keys.current), keys.previous.as_ref()]
            .into_iter()
            .flatten()
            .find(|k| k.id == id)?
            .clone();
        drop(keys);
        let mut sealed = cipher.get(4 + NONCE_LEN..)?.to_vec();
        let plain = key
            .aead()
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(id.to_be_bytes()),
                &mut sealed,
            )
            .ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::server::ProducesTickets;

    #[test]
    fn tickets_decrypt_after_the_keys_travel_and_not_with_other_keys() {
        let old = TicketKeys::new();
        let ticket = old.encrypt(b"session state").unwrap();
        assert_eq!(old.decrypt(&ticket).as_deref(), Some(&b"session state"[..]));
        let successor = TicketKeys::new();
        assert_eq!(successor.decrypt(&ticket), None, "another process's keys");
        successor.import(old.export());
        assert_eq!(
            successor.decrypt(&ticket).as_deref(),
            Some(&b"session state"[..])
        );
        let mut forged = ticket.clone();
        *forged.last_mut().unwrap() ^= 1;
        assert_eq!(successor.decrypt(&forged), None, "the tag is checked");
        assert!(!format!("{successor:?}").contains("secret"));
    }

    #[test]
    fn keys_past_their_lifetime_decrypt_nothing_and_roll_once() {
        let keys = TicketKeys::new();
        let ticket = keys.encrypt(b"s").unwrap();
        // The current key aged one rotation: it becomes the previous one, still decrypting.
        keys.keys.write().unwrap().current.since -= ROTATION.as_secs();
        let fresh = keys.encrypt(b"t").unwrap();
        assert_eq!(keys.decrypt(&ticket).as_deref(), Some(&b"s"[..]));
        let ids = |k: &TicketKeys| {
            let k = k.keys.read().unwrap();
            (k.current.id, k.previous.as_ref().map(|p| p.id))
        };
        assert_eq!(ids(&keys), (1, Some(0)), "rolled once");
        // Both aged past twice the rotation (a state file read a month later): none survives.
        let mut old = keys.export();
        old.current.since -= 30 * 24 * 3600;
        if let Some(p) = old.previous.as_mut() {
            p.since -= 30 * 24 * 3600;
        }
        let successor = TicketKeys::new();
        successor.import(old);
        assert_eq!(successor.decrypt(&ticket), None);
        assert_eq!(successor.decrypt(&fresh), None);
    }
}

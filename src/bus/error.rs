//! What can go wrong talking to NATS, and which of it is worth retrying.

use std::time::Duration;

use async_nats::jetstream;

/// A boxed error, the source of several [`BusError`] variants.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong talking to NATS. Every variant names what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The initial connection failed (after retries, for transient causes).
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    /// The TLS handshake failed: an untrusted or invalid certificate, a missing client
    /// certificate, or TLS required of a server without it. Not retried.
    #[error(
        "TLS with NATS at {url} failed (check nats.tls_ca_file, nats.tls_cert_file, \
         nats.tls_key_file, nats.tls_required and the server's tls block): {source}"
    )]
    Tls {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    /// A stream could not be looked up, created or updated.
    #[error("cannot set up stream `{stream}`: {message}")]
    StreamSetup {
        stream: String,
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The durable consumer could not be looked up, created or updated.
    #[error("cannot set up consumer `{consumer}` on stream `{stream}`: {source}")]
    ConsumerSetup {
        stream: String,
        consumer: String,
        #[source]
        source: BoxError,
    },
    /// A value that must go into a header or subject is not usable there.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    /// A message body could not be serialized.
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// Sending a message or receiving its PubAck failed (no stream, connection lost, server
    /// error).
    #[error("publish to `{subject}` failed: {source}")]
    Publish {
        subject: String,
        #[source]
        source: jetstream::context::PublishError,
    },
    /// The PubAck did not come within `nats.request_timeout`; the message may or may not be
    /// stored (a retry with the same `Nats-Msg-Id` is deduplicated).
    #[error("no PubAck for `{subject}` within {timeout:?}")]
    PubAckTimeout { subject: String, timeout: Duration },
    /// Reading a stream or consumer (info, ordered reads, pulls) failed.
    #[error("cannot read {what}: {source}")]
    Read {
        what: String,
        #[source]
        source: BoxError,
    },
    /// Flushing or draining the connection failed or timed out.
    #[error("cannot drain the NATS connection: {message}")]
    Drain { message: String },
    /// The `[nats]` credentials or TLS keys are unusable (unreadable file, malformed creds).
    /// Never contains a secret.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

impl BusError {
    /// Whether retrying the same operation later may succeed (connection, server or timing
    /// trouble), as opposed to a problem with the input or the configuration.
    pub fn is_transient(&self) -> bool {
        use jetstream::context::PublishErrorKind as K;
        match self {
            BusError::Invalid { .. }
            | BusError::Encode { .. }
            | BusError::Config(_)
            | BusError::Tls { .. } => false,
            BusError::Connect { source, .. } => matches!(
                source.kind(),
                async_nats::ConnectErrorKind::Io
                    | async_nats::ConnectErrorKind::TimedOut
                    | async_nats::ConnectErrorKind::Dns
                    | async_nats::ConnectErrorKind::MaxReconnects
            ),
            BusError::Publish { source, .. } => !matches!(
                source.kind(),
                K::MaxPayloadExceeded | K::WrongLastMessageId | K::WrongLastSequence
            ),
            _ => true,
        }
    }

    /// Whether this is a PubAck timeout (the message may have been stored).
    pub fn is_timeout(&self) -> bool {
        matches!(self, BusError::PubAckTimeout { .. })
    }
}

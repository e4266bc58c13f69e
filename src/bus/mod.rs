//! JetStream: stream and consumer set-up, the pull loop, publishing, dead letters.
//!
//! ```text
//!  events stream (streams.events, "<events_subject_prefix>.>")
//!     │ durable pull consumer (consumer.durable), explicit acks   ── Puller::next_batch
//!     ▼
//!  worker ── Bus::publish_triggers ──▶ triggers stream (streams.triggers)
//!        └── Bus::dead_letter      ──▶ dead-letter stream (streams.dead)
//! ```
//!
//! Every publish carries a `Nats-Msg-Id` (event id, trigger id, `dead-<stream>-<seq>`) and
//! awaits its PubAck, so a redo within `streams.duplicate_window` is deduplicated by
//! JetStream. Everything here works against nats-server 2.9 and later.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::watch;

use crate::config::{
    Config, ConfigError, ConsumerConfig, NatsAuth, NatsConfig, RetryConfig, StreamsConfig,
    redact_url,
};
use backoff::backoff;

pub mod backoff;
mod dead_letter;
pub mod disposition;
mod error;
mod publish;
mod pull;
mod read;
mod setup;
mod time;

pub use dead_letter::{
    DeadLetter, DeadMessage, DeliveryDeadLetter, REDRIVE_TOKEN, headers as dead_headers,
};
pub use disposition::{Letter, ack, dead_letter_else_nak, msg_info};
pub use error::{BoxError, BusError};
pub use publish::PubAckInfo;
pub use pull::Puller;
pub use read::{EventMessage, EventsFrom, StreamState};
pub use time::{NATS_TIME_MAX, NATS_TIME_MIN, check_nats_time};

/// The name given to the NATS connection (visible in the server's connection list).
pub const CONNECTION_NAME: &str = concat!("runwatch/", env!("CARGO_PKG_VERSION"));

/// How many times the initial connect is tried before [`Bus::connect`] gives up.
const CONNECT_ATTEMPTS: usize = 8;

/// The three streams runwatch owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// Workflow-run events (input).
    Events,
    /// Triggers (output).
    Triggers,
    /// Dead letters (poison or exhausted input).
    Dead,
}

/// A connection to NATS and its JetStream context, with the configuration sections the bus
/// needs. Cheap to clone (clones share the connection).
#[derive(Debug, Clone)]
pub struct Bus {
    client: async_nats::Client,
    js: jetstream::Context,
    nats: NatsConfig,
    streams: StreamsConfig,
    consumer: ConsumerConfig,
    retry: RetryConfig,
    closed: watch::Receiver<bool>,
}

impl Bus {
    /// Connects to `nats.url` with `nats.connect_timeout`; JetStream API requests and PubAck
    /// waits are bounded by `nats.request_timeout`. A failed initial connect is retried with
    /// exponential backoff (`retry.min_delay`..`retry.max_delay`, at most 8 attempts) when the
    /// cause may pass (refused, timed out, DNS); a bad URL or bad credentials fail at once.
    /// Once connected, the client reconnects forever; disconnects and reconnects are logged.
    pub async fn connect(config: &Config) -> Result<Bus, BusError> {
        use backon::BackoffBuilder;

        // Credentials in the URL are handed over as options (auth() below), never inside
        // the URL, which the client would log.
        let (url, _) = crate::config::split_nats_url(&config.nats.url)?;
        let auth = config.nats.auth()?;
        config.nats.validate_tls()?;
        let (closed_tx, closed_rx) = watch::channel(false);
        let closed_tx = Arc::new(closed_tx);
        let mut delays = backoff(&config.retry)
            .with_max_times(CONNECT_ATTEMPTS - 1)
            .build();
        let mut attempt = 1;
        let client = loop {
            let closed_tx = closed_tx.clone();
            let options = async_nats::ConnectOptions::new()
                .name(CONNECTION_NAME)
                .connection_timeout(config.nats.connect_timeout)
                .request_timeout(Some(config.nats.request_timeout))
                .max_reconnects(None)
                .event_callback(move |event| {
                    log_event(&event, &closed_tx);
                    async {}
                });
            let options = secure(options, &config.nats, &auth)?;
            match options.connect(url.as_str()).await {
                Ok(client) => break client,
                Err(source) => {
                    let err = if is_tls_failure(&source) {
                        BusError::Tls {
                            url: redact_url(&url),
                            source,
                        }
                    } else {
                        BusError::Connect {
                            url: redact_url(&url),
                            source,
                        }
                    };
                    let next = if err.is_transient() {
                        delays.next()
                    } else {
                        None
                    };
                    match next {
                        Some(delay) => {
                            tracing::warn!(
                                attempt,
                                retry_in = ?delay,
                                error = %err,
                                "NATS connect failed; retrying"
                            );
                            tokio::time::sleep(delay).await;
                            attempt += 1;
                        }
                        None => return Err(err),
                    }
                }
            }
        };
        tracing::info!(url = %redact_url(&url), "connected to NATS");
        let js = jetstream::ContextBuilder::new()
            .timeout(config.nats.request_timeout)
            .build(client.clone());
        Ok(Bus {
            client,
            js,
            nats: config.nats.clone(),
            streams: config.streams.clone(),
            consumer: config.consumer.clone(),
            retry: config.retry.clone(),
            closed: closed_rx,
        })
    }

    /// The NATS client, e.g. for `/readyz` (`client().connection_state()`).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context (bounded by `nats.request_timeout`), for tools and tests.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Whether the connection is currently up.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// The configured name of one of runwatch's streams.
    pub fn stream_name(&self, kind: StreamKind) -> &str {
        match kind {
            StreamKind::Events => &self.streams.events,
            StreamKind::Triggers => &self.streams.triggers,
            StreamKind::Dead => &self.streams.dead,
        }
    }

    /// The configured subject prefix of one of runwatch's streams.
    pub fn subject_prefix(&self, kind: StreamKind) -> &str {
        match kind {
            StreamKind::Events => &self.streams.events_subject_prefix,
            StreamKind::Triggers => &self.streams.triggers_subject_prefix,
            StreamKind::Dead => &self.streams.dead_subject_prefix,
        }
    }

    /// The durable consumer's name.
    pub fn durable_name(&self) -> &str {
        &self.consumer.durable
    }

    /// Number of messages the durable consumer still has to finish: not yet delivered
    /// (`num_pending`) plus delivered and not yet acknowledged (`num_ack_pending`, which
    /// includes messages nacked with a delay). For metrics and tests waiting for quiescence.
    pub async fn consumer_pending(&self) -> Result<u64, BusError> {
        let stream = self
            .js
            .get_stream_no_info(&self.streams.events)
            .await
            .map_err(|e| BusError::Read {
                what: format!("stream `{}`", self.streams.events),
                source: Box::new(e),
            })?;
        let info = stream
            .consumer_info(&self.consumer.durable)
            .await
            .map_err(|e| BusError::Read {
                what: format!(
                    "consumer `{}` on stream `{}`",
                    self.consumer.durable, self.streams.events
                ),
                source: Box::new(e),
            })?;
        Ok(info.num_pending + info.num_ack_pending as u64)
    }

    /// Graceful shutdown: flushes what was written (publishes, acks), then drains the
    /// connection (unsubscribes, lets in-flight messages through, closes) and waits for it to
    /// close, at most `nats.request_timeout`. Clones of this `Bus` are unusable afterwards.
    pub async fn drain(&self) -> Result<(), BusError> {
        let timeout = self.nats.request_timeout;
        match tokio::time::timeout(timeout, self.client.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "NATS flush before drain failed"),
            Err(_) => tracing::warn!(?timeout, "NATS flush before drain timed out"),
        }
        self.client.drain().await.map_err(|e| BusError::Drain {
            message: e.to_string(),
        })?;
        let mut closed = self.closed.clone();
        match tokio::time::timeout(timeout, closed.wait_for(|closed| *closed)).await {
            Ok(Ok(_)) => Ok(()),
            // The sender lives in the connection's callback; gone means closed.
            Ok(Err(_)) => Ok(()),
            Err(_) => Err(BusError::Drain {
                message: format!("connection not closed within {timeout:?}"),
            }),
        }
    }

    pub(crate) fn retry_config(&self) -> &RetryConfig {
        &self.retry
    }

    pub(crate) fn consumer_config(&self) -> &ConsumerConfig {
        &self.consumer
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        self.nats.request_timeout
    }
}

/// Whether a connect error comes from the TLS handshake (async-nats reports most of those
/// as I/O errors, which would otherwise be retried as transient).
fn is_tls_failure(err: &async_nats::ConnectError) -> bool {
    if err.kind() == async_nats::ConnectErrorKind::Tls {
        return true;
    }
    let mut next: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = next {
        if e.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// Adds the credentials and TLS settings of `[nats]` to `options`. Secrets go to the client
/// only; nothing here logs or formats them.
fn secure(
    options: async_nats::ConnectOptions,
    nats: &NatsConfig,
    auth: &NatsAuth,
) -> Result<async_nats::ConnectOptions, BusError> {
    let mut options = match auth {
        NatsAuth::None => options,
        NatsAuth::UserPassword { user, password } => {
            options.user_and_password(user.clone(), password.expose().to_string())
        }
        NatsAuth::Token(token) => options.token(token.expose().to_string()),
        NatsAuth::NKey(seed) => options.nkey(seed.expose().to_string()),
        NatsAuth::Creds(creds) => options.credentials(creds.expose()).map_err(|_| {
            // The parser's message may quote the file; say only what is wrong.
            ConfigError::Invalid {
                key: "nats.creds_file".into(),
                message: "is not a NATS credentials file (a user JWT and an nkey seed)".into(),
            }
        })?,
    };
    if let Some(ca) = &nats.tls_ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&nats.tls_cert_file, &nats.tls_key_file) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    if nats.tls_required {
        options = options.require_tls(true);
    }
    Ok(options)
}

fn log_event(event: &async_nats::Event, closed: &watch::Sender<bool>) {
    use async_nats::Event;
    match event {
        Event::Connected => tracing::info!("NATS connection established"),
        Event::Disconnected => tracing::warn!("NATS connection lost; reconnecting"),
        Event::LameDuckMode => tracing::warn!("NATS server entered lame duck mode"),
        Event::Draining => tracing::info!("NATS connection draining"),
        Event::Closed => {
            tracing::info!("NATS connection closed");
            closed.send_replace(true);
        }
        Event::SlowConsumer(sid) => tracing::warn!(sid, "NATS slow consumer: messages dropped"),
        Event::ServerError(e) => tracing::warn!(error = %e, "NATS server error"),
        // `Other` is a failed reconnect attempt: one per attempt, after `Disconnected`.
        Event::ClientError(e @ async_nats::ClientError::Other(_)) => {
            tracing::debug!(error = %e, "NATS reconnect attempt failed")
        }
        Event::ClientError(e) => tracing::warn!(error = %e, "NATS client error"),
    }
}

//! Reading the triggers and dead-letter streams with ordered (ephemeral, unacknowledged)
//! consumers: `runwatch triggers tail`, `runwatch dead list`, and tests.

use async_nats::jetstream::consumer::{DeliverPolicy, pull::Ordered, pull::OrderedConfig};
use bytes::Bytes;
use futures::{Stream, StreamExt};

use super::{Bus, BusError, DeadMessage, StreamKind};

/// A stream's message counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamState {
    /// Messages currently stored.
    pub messages: u64,
    /// The lowest sequence still stored (0 or `last_sequence + 1` when empty).
    pub first_sequence: u64,
    /// The last sequence ever assigned (0 when nothing was ever stored).
    pub last_sequence: u64,
}

impl Bus {
    /// The message counters of one of runwatch's streams.
    pub async fn stream_state(&self, kind: StreamKind) -> Result<StreamState, BusError> {
        let name = self.stream_name(kind);
        let stream = self.js.get_stream(name).await.map_err(|e| BusError::Read {
            what: format!("stream `{name}`"),
            source: Box::new(e),
        })?;
        let state = &stream.cached_info().state;
        Ok(StreamState {
            messages: state.messages,
            first_sequence: state.first_sequence,
            last_sequence: state.last_sequence,
        })
    }

    /// An ordered consumer over one of runwatch's streams.
    async fn ordered(
        &self,
        kind: StreamKind,
        deliver_policy: DeliverPolicy,
    ) -> Result<Ordered, BusError> {
        let name = self.stream_name(kind).to_string();
        let read_error = |e: BoxedDisplay| BusError::Read {
            what: format!("stream `{name}`"),
            source: e,
        };
        let stream = self
            .js
            .get_stream_no_info(&name)
            .await
            .map_err(|e| read_error(Box::new(e)))?;
        let consumer = stream
            .create_consumer(OrderedConfig {
                deliver_policy,
                description: Some("runwatch reader".to_string()),
                ..Default::default()
            })
            .await
            .map_err(|e| read_error(Box::new(e)))?;
        consumer
            .messages()
            .await
            .map_err(|e| read_error(Box::new(e)))
    }

    /// Reads triggers from the triggers stream with an ordered, ephemeral consumer: from the
    /// start (`from_start`) or only those published from now on. Yields
    /// `(stream sequence, raw JSON body)`. The stream never ends by itself; bound it with a
    /// count or a timeout (see [`Bus::read_all_triggers`] to get exactly what is stored).
    pub async fn trigger_messages(
        &self,
        from_start: bool,
    ) -> Result<impl Stream<Item = Result<(u64, Bytes), BusError>> + Send + Unpin + 'static, BusError>
    {
        let messages = self.positioned_triggers(from_start).await?;
        Ok(messages.map(|item| item.map(|(message, _)| message)))
    }

    /// [`Bus::trigger_messages`], each with its [`Position`].
    async fn positioned_triggers(
        &self,
        from_start: bool,
    ) -> Result<
        impl Stream<Item = Result<((u64, Bytes), Position), BusError>> + Send + Unpin + 'static,
        BusError,
    > {
        let policy = if from_start {
            DeliverPolicy::All
        } else {
            DeliverPolicy::New
        };
        self.positioned(StreamKind::Triggers, policy, |message, position| {
            (position.sequence, message.payload)
        })
        .await
    }

    /// Reads the dead-letter stream from the start with an ordered, ephemeral consumer,
    /// headers decoded. The stream never ends by itself (see [`Bus::read_all_dead`]).
    pub async fn dead_messages(
        &self,
    ) -> Result<impl Stream<Item = Result<DeadMessage, BusError>> + Send + Unpin + 'static, BusError>
    {
        let messages = self.positioned_dead().await?;
        Ok(messages.map(|item| item.map(|(message, _)| message)))
    }

    /// [`Bus::dead_messages`], each with its [`Position`].
    async fn positioned_dead(
        &self,
    ) -> Result<
        impl Stream<Item = Result<(DeadMessage, Position), BusError>> + Send + Unpin + 'static,
        BusError,
    > {
        self.positioned(StreamKind::Dead, DeliverPolicy::All, |message, position| {
            DeadMessage::from_parts(
                position.sequence,
                message.subject.to_string(),
                message.headers,
                message.payload,
            )
        })
        .await
    }

    /// An ordered consumer's messages, each made into a `T` and paired with its position.
    async fn positioned<T>(
        &self,
        kind: StreamKind,
        policy: DeliverPolicy,
        make: fn(async_nats::Message, Position) -> T,
    ) -> Result<
        impl Stream<Item = Result<(T, Position), BusError>> + Send + Unpin + 'static,
        BusError,
    >
    where
        T: Send + 'static,
    {
        let what = format!("stream `{}`", self.stream_name(kind));
        let ordered = self.ordered(kind, policy).await?;
        Ok(ordered.map(move |item| {
            let read_error = |source: BoxedDisplay| BusError::Read {
                what: what.clone(),
                source,
            };
            let msg = item.map_err(|e| read_error(Box::new(e)))?;
            let info = msg.info().map_err(read_error)?;
            let position = Position {
                sequence: info.stream_sequence,
                pending: info.pending,
            };
            Ok((make(msg.message, position), position))
        }))
    }

    /// Every trigger stored now, in stream order (see [`Bus::read_all_dead`] for where the
    /// read ends).
    pub async fn read_all_triggers(&self) -> Result<Vec<(u64, Bytes)>, BusError> {
        let state = self.stream_state(StreamKind::Triggers).await?;
        if state.messages == 0 {
            return Ok(Vec::new());
        }
        let messages = self.positioned_triggers(true).await?;
        self.read_stored(StreamKind::Triggers, messages, state.last_sequence)
            .await
    }

    /// Every dead letter stored now, in stream order. The read ends at the stream's last
    /// sequence at the time of the call, or earlier at a message after which nothing was
    /// pending when it was delivered: deleted messages (the newest included) are never
    /// waited for. A quiet consumer is checked against the stream every 500 ms at most (is
    /// anything left to read?), and given up on after `nats.request_timeout` only when
    /// something is.
    pub async fn read_all_dead(&self) -> Result<Vec<DeadMessage>, BusError> {
        let state = self.stream_state(StreamKind::Dead).await?;
        if state.messages == 0 {
            return Ok(Vec::new());
        }
        let messages = self.positioned_dead().await?;
        self.read_stored(StreamKind::Dead, messages, state.last_sequence)
            .await
    }

    async fn read_stored<T>(
        &self,
        kind: StreamKind,
        mut messages: impl Stream<Item = Result<(T, Position), BusError>> + Unpin,
        last: u64,
    ) -> Result<Vec<T>, BusError> {
        let mut out = Vec::new();
        let mut read_up_to = 0;
        let patience = self.request_timeout();
        let mut quiet_since = tokio::time::Instant::now();
        loop {
            match tokio::time::timeout(patience.min(QUIET_CHECK), messages.next()).await {
                Ok(Some(Ok((item, position)))) => {
                    if position.sequence > last {
                        // Stored after the call.
                        return Ok(out);
                    }
                    out.push(item);
                    read_up_to = position.sequence;
                    if position.is_end(last) {
                        return Ok(out);
                    }
                    quiet_since = tokio::time::Instant::now();
                }
                Ok(Some(Err(e))) => return Err(e),
                Ok(None) => {
                    return Err(BusError::Read {
                        what: format!("stream `{}`", self.stream_name(kind)),
                        source: "the ordered consumer ended early".into(),
                    });
                }
                Err(_) => {
                    // Messages deleted after the consumer counted them are never delivered:
                    // is anything up to `last` still stored?
                    let left = self
                        .next_stored_sequence(kind, read_up_to.saturating_add(1))
                        .await?;
                    if left.is_none_or(|seq| seq > last) {
                        return Ok(out);
                    }
                    if quiet_since.elapsed() >= patience {
                        return Err(BusError::Read {
                            what: format!("stream `{}`", self.stream_name(kind)),
                            source: format!(
                                "no message within {patience:?} (read {} messages up to sequence {read_up_to}; \
                                 sequence {} of up to {last} is stored)",
                                out.len(),
                                left.unwrap_or_default()
                            )
                            .into(),
                        });
                    }
                }
            }
        }
    }

    /// The sequence of the first message stored in one of runwatch's streams at or after
    /// `from`, or None when there is none.
    pub async fn next_stored_sequence(
        &self,
        kind: StreamKind,
        from: u64,
    ) -> Result<Option<u64>, BusError> {
        use async_nats::jetstream::stream::RawMessageErrorKind;
        let name = self.stream_name(kind);
        let read_error = |e: BoxedDisplay| BusError::Read {
            what: format!("stream `{name}`"),
            source: e,
        };
        let stream = self
            .js
            .get_stream_no_info(name)
            .await
            .map_err(|e| read_error(Box::new(e)))?;
        match stream
            .raw_message_builder()
            .sequence(from.max(1))
            .next_by_subject(">")
            .send()
            .await
        {
            Ok(message) => Ok(Some(message.sequence)),
            Err(e) if matches!(e.kind(), RawMessageErrorKind::NoMessageFound) => Ok(None),
            Err(e) => Err(read_error(Box::new(e))),
        }
    }
}

/// How long a read of everything stored waits for the next message before it asks the
/// stream whether anything is left to read.
const QUIET_CHECK: std::time::Duration = std::time::Duration::from_millis(500);

/// Where a message sits: its stream sequence, and how many messages the consumer still had
/// after it when the server delivered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) sequence: u64,
    pub(crate) pending: u64,
}

impl Position {
    /// Whether a read of everything stored up to `last` ends with this message: it is the
    /// last sequence, or nothing was pending after it (every later message up to `last` was
    /// deleted).
    pub(crate) fn is_end(self, last: u64) -> bool {
        self.sequence >= last || self.pending == 0
    }
}

type BoxedDisplay = super::BoxError;

/// Where `runwatch replay` starts reading the events stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventsFrom {
    /// From this stream sequence (inclusive).
    Sequence(u64),
    /// From the first message stored at or after this time.
    Time(chrono::DateTime<chrono::Utc>),
}

/// One message of the events stream, as read by [`Bus::event_messages_from`].
#[derive(Debug, Clone)]
pub struct EventMessage {
    /// Stream sequence.
    pub sequence: u64,
    /// Subject it was published to.
    pub subject: String,
    /// The raw body.
    pub payload: Bytes,
    /// How many messages the consumer still had after this one when it was delivered.
    pub pending: u64,
}

impl Bus {
    /// Reads the events stream from `from` with an ephemeral pull consumer that takes no
    /// acks (it does not touch the durable consumer, and goes away after a minute unused).
    /// Returns how many messages were pending from `from` when it was created, and the
    /// messages; the stream never ends by itself: stop at a sequence.
    pub async fn event_messages_from(
        &self,
        from: EventsFrom,
    ) -> Result<
        (
            u64,
            impl Stream<Item = Result<EventMessage, BusError>> + Send + Unpin + 'static,
        ),
        BusError,
    > {
        use async_nats::jetstream::consumer::{AckPolicy, pull};
        let name = self.stream_name(StreamKind::Events).to_string();
        let read_error = |e: BoxedDisplay| BusError::Read {
            what: format!("stream `{name}`"),
            source: e,
        };
        let deliver_policy = match from {
            EventsFrom::Sequence(seq) => DeliverPolicy::ByStartSequence {
                start_sequence: seq.max(1),
            },
            EventsFrom::Time(t) => {
                // A time outside int64 nanoseconds overflows on the server: refused here.
                let nanos = super::check_nats_time(t)
                    .ok()
                    .and_then(|()| t.timestamp_nanos_opt())
                    .ok_or_else(|| BusError::Invalid {
                        what: "start time",
                        value: t.to_rfc3339(),
                        reason: "outside the times NATS JetStream holds (int64 nanoseconds from \
                                 1970: 1677-09-21T00:12:43.145224192Z to 2262-04-11T23:47:16.854775807Z)",
                    })?;
                DeliverPolicy::ByStartTime {
                    start_time: async_nats::datetime::from_nanos(i128::from(nanos))
                        .map_err(&read_error)?,
                }
            }
        };
        let stream = self
            .js
            .get_stream_no_info(&name)
            .await
            .map_err(|e| read_error(Box::new(e)))?;
        let mut consumer = stream
            .create_consumer(pull::Config {
                deliver_policy,
                ack_policy: AckPolicy::None,
                inactive_threshold: std::time::Duration::from_secs(60),
                description: Some("runwatch replay".to_string()),
                ..Default::default()
            })
            .await
            .map_err(|e| read_error(Box::new(e)))?;
        let pending = consumer
            .info()
            .await
            .map_err(|e| read_error(Box::new(e)))?
            .num_pending;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| read_error(Box::new(e)))?;
        let what = format!("stream `{name}`");
        Ok((
            pending,
            messages.map(move |item| {
                let read_error = |source: BoxedDisplay| BusError::Read {
                    what: what.clone(),
                    source,
                };
                let msg = item.map_err(|e| read_error(Box::new(e)))?;
                let info = msg.info().map_err(read_error)?;
                let (sequence, pending) = (info.stream_sequence, info.pending);
                Ok(EventMessage {
                    sequence,
                    pending,
                    subject: msg.message.subject.to_string(),
                    payload: msg.message.payload.clone(),
                })
            }),
        ))
    }
}

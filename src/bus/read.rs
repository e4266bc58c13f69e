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
        let policy = if from_start {
            DeliverPolicy::All
        } else {
            DeliverPolicy::New
        };
        let what = format!("stream `{}`", self.stream_name(StreamKind::Triggers));
        let ordered = self.ordered(StreamKind::Triggers, policy).await?;
        Ok(ordered.map(move |item| {
            let read_error = |source: BoxedDisplay| BusError::Read {
                what: what.clone(),
                source,
            };
            let msg = item.map_err(|e| read_error(Box::new(e)))?;
            let seq = msg.info().map_err(read_error)?.stream_sequence;
            Ok((seq, msg.message.payload.clone()))
        }))
    }

    /// Reads the dead-letter stream from the start with an ordered, ephemeral consumer,
    /// headers decoded. The stream never ends by itself (see [`Bus::read_all_dead`]).
    pub async fn dead_messages(
        &self,
    ) -> Result<impl Stream<Item = Result<DeadMessage, BusError>> + Send + Unpin + 'static, BusError>
    {
        let what = format!("stream `{}`", self.stream_name(StreamKind::Dead));
        let ordered = self.ordered(StreamKind::Dead, DeliverPolicy::All).await?;
        Ok(ordered.map(move |item| {
            let read_error = |source: BoxedDisplay| BusError::Read {
                what: what.clone(),
                source,
            };
            let msg = item.map_err(|e| read_error(Box::new(e)))?;
            let seq = msg.info().map_err(read_error)?.stream_sequence;
            let message = msg.message;
            Ok(DeadMessage::from_parts(
                seq,
                message.subject.to_string(),
                message.headers,
                message.payload,
            ))
        }))
    }

    /// Every trigger stored now, in stream order (reads up to the last sequence at the time
    /// of the call). Waits at most `nats.request_timeout` for each message.
    pub async fn read_all_triggers(&self) -> Result<Vec<(u64, Bytes)>, BusError> {
        let state = self.stream_state(StreamKind::Triggers).await?;
        if state.messages == 0 {
            return Ok(Vec::new());
        }
        let messages = self.trigger_messages(true).await?;
        self.collect_until(messages, state.last_sequence, |(seq, _)| *seq)
            .await
    }

    /// Every dead letter stored now, in stream order (see [`Bus::read_all_triggers`]).
    pub async fn read_all_dead(&self) -> Result<Vec<DeadMessage>, BusError> {
        let state = self.stream_state(StreamKind::Dead).await?;
        if state.messages == 0 {
            return Ok(Vec::new());
        }
        let messages = self.dead_messages().await?;
        self.collect_until(messages, state.last_sequence, |m| m.sequence)
            .await
    }

    async fn collect_until<T>(
        &self,
        mut messages: impl Stream<Item = Result<T, BusError>> + Unpin,
        last: u64,
        seq: impl Fn(&T) -> u64,
    ) -> Result<Vec<T>, BusError> {
        let mut out = Vec::new();
        loop {
            match tokio::time::timeout(self.request_timeout(), messages.next()).await {
                Ok(Some(Ok(item))) => {
                    let s = seq(&item);
                    out.push(item);
                    if s >= last {
                        return Ok(out);
                    }
                }
                Ok(Some(Err(e))) => return Err(e),
                Ok(None) => {
                    return Err(BusError::Read {
                        what: "ordered consumer".to_string(),
                        source: "the message stream ended early".into(),
                    });
                }
                Err(_) => {
                    return Err(BusError::Read {
                        what: "ordered consumer".to_string(),
                        source: format!(
                            "no message within {:?} (read {} of up to sequence {last})",
                            self.request_timeout(),
                            out.len()
                        )
                        .into(),
                    });
                }
            }
        }
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
}

impl Bus {
    /// Reads the events stream from `from` with an ephemeral pull consumer that takes no
    /// acks (it does not touch the durable consumer, and goes away after a minute unused).
    /// Returns how many messages were pending from `from` when it was created, and the
    /// messages; the stream never ends by itself: stop at a sequence.
    pub async fn event_messages_from(
        &self,
        from: EventsFrom,
    ) -> Result<(u64, impl Stream<Item = Result<EventMessage, BusError>> + Send + Unpin + 'static), BusError> {
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
            EventsFrom::Time(t) => DeliverPolicy::ByStartTime {
                start_time: async_nats::datetime::from_nanos(i128::from(t.timestamp_micros()) * 1000)
                    .map_err(&read_error)?,
            },
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
                let sequence = msg.info().map_err(read_error)?.stream_sequence;
                Ok(EventMessage {
                    sequence,
                    subject: msg.message.subject.to_string(),
                    payload: msg.message.payload.clone(),
                })
            }),
        ))
    }
}

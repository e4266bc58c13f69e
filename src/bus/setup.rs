//! Idempotent creation of the three streams and the durable pull consumer.
//!
//! Several replicas may start at once, so every step tolerates losing a race: a stream is
//! looked up first; created when missing (a concurrent identical create is accepted by the
//! server, a different one answers "name already in use", or on nats-server 2.9 sometimes
//! "subjects overlap", and is retried as an update once the stream is found); and
//! updated only when one of the settings runwatch owns differs (subjects, duplicate window,
//! replicas, and the limits `max_age` / `max_bytes` from `[streams]`), keeping whatever else
//! an operator set (placement, `max_msgs`, ...). Changing a limit in the configuration
//! changes the stream at the next start; a lower limit makes JetStream remove the oldest
//! messages over it at once, and the update is logged with the old and new limits.

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream::{
    self, ErrorCode,
    consumer::{self, AckPolicy, DeliverPolicy, PullConsumer},
    context::{CreateStreamErrorKind, GetStreamErrorKind},
    stream::{self, StorageType},
};

use super::{Bus, BusError, StreamKind};

/// How often a lost create/update race is retried before giving up.
const RACE_ATTEMPTS: usize = 5;

impl Bus {
    /// Creates or updates (idempotently, safe when several replicas start at once) the
    /// three streams: events (`streams.events`, subjects `<events_subject_prefix>.>`),
    /// triggers (`streams.triggers`, `<triggers_subject_prefix>.>`) and dead letters
    /// (`streams.dead`, `<dead_subject_prefix>.>`); file storage, `streams.duplicate_window`,
    /// `streams.replicas`. An existing stream keeps its other settings.
    pub async fn ensure_streams(&self) -> Result<(), BusError> {
        for kind in [StreamKind::Events, StreamKind::Triggers, StreamKind::Dead] {
            self.ensure_stream(kind).await?;
        }
        Ok(())
    }

    /// Creates or updates one of the three streams (see [`Bus::ensure_streams`]).
    pub async fn ensure_stream(&self, kind: StreamKind) -> Result<(), BusError> {
        let name = self.stream_name(kind).to_string();
        let subject = format!("{}.>", self.subject_prefix(kind));
        let (max_age, max_bytes) = match kind {
            StreamKind::Events => (self.streams.events_max_age, self.streams.events_max_bytes),
            StreamKind::Triggers => (
                self.streams.triggers_max_age,
                self.streams.triggers_max_bytes,
            ),
            StreamKind::Dead => (self.streams.dead_max_age, self.streams.dead_max_bytes),
        };
        let wanted = Wanted {
            subjects: vec![subject],
            duplicate_window: self.streams.duplicate_window,
            replicas: self.streams.replicas.max(1),
            max_age,
            // 0 in the configuration: no size bound (JetStream's -1).
            max_bytes: if max_bytes == 0 { -1 } else { max_bytes },
        };
        let setup_error =
            |message: String, source: Option<super::BoxError>| BusError::StreamSetup {
                stream: name.clone(),
                message,
                source,
            };

        for _ in 0..RACE_ATTEMPTS {
            match self.js.get_stream(&name).await {
                Ok(mut existing) => {
                    let current = existing.cached_info().config.clone();
                    let Some(updated) = wanted.apply(&current, &name) else {
                        tracing::debug!(stream = %name, "stream is up to date");
                        return Ok(());
                    };
                    match self.js.update_stream(&updated).await {
                        Ok(_) => {
                            tracing::info!(
                                stream = %name,
                                subjects = ?updated.subjects,
                                duplicate_window = ?updated.duplicate_window,
                                replicas = updated.num_replicas,
                                max_age = ?updated.max_age,
                                max_bytes = updated.max_bytes,
                                previous_max_age = ?current.max_age,
                                previous_max_bytes = current.max_bytes,
                                "stream updated"
                            );
                            return Ok(());
                        }
                        // Deleted between our look-up and the update: start over.
                        Err(e) if e.kind() == CreateStreamErrorKind::NotFound => continue,
                        Err(e) => {
                            // A concurrent replica may have applied the same update.
                            if let Ok(info) = existing.info().await
                                && wanted.apply(&info.config, &name).is_none()
                            {
                                return Ok(());
                            }
                            return Err(setup_error(
                                format!("update failed: {e}"),
                                Some(Box::new(e)),
                            ));
                        }
                    }
                }
                Err(e) if is_stream_not_found(&e.kind()) => {
                    let config = wanted.new_config(&name);
                    match self.js.create_stream(config).await {
                        Ok(_) => {
                            tracing::info!(stream = %name, subjects = ?wanted.subjects, "stream created");
                            return Ok(());
                        }
                        // Another replica created it first, with a different normalized
                        // config: look it up again and update it.
                        Err(e)
                            if matches!(&e.kind(), CreateStreamErrorKind::JetStream(je)
                                if je.error_code() == ErrorCode::STREAM_NAME_EXIST) =>
                        {
                            continue;
                        }
                        // nats-server 2.9 may answer a concurrent create of the same
                        // stream with "subjects overlap" (10065) instead: when a stream of
                        // our name now exists, that was another replica's create.
                        Err(e) => {
                            if self.js.get_stream(&name).await.is_ok() {
                                continue;
                            }
                            return Err(setup_error(
                                format!("create failed: {e}"),
                                Some(Box::new(e)),
                            ));
                        }
                    }
                }
                Err(e) => {
                    return Err(setup_error(
                        format!("look-up failed: {e}"),
                        Some(Box::new(e)),
                    ));
                }
            }
        }
        Err(setup_error(
            format!("still changing after {RACE_ATTEMPTS} attempts (concurrent set-up?)"),
            None,
        ))
    }

    /// Creates or updates the durable pull consumer `consumer.durable` on the events stream:
    /// explicit acks, `consumer.ack_wait`, `consumer.max_ack_pending`, deliver all, and
    /// `max_deliver = -1` (unlimited): the worker counts deliveries itself and dead-letters
    /// after `consumer.max_deliver`, so JetStream never silently stops redelivering.
    pub async fn ensure_consumer(&self) -> Result<(), BusError> {
        self.consumer_handle().await.map(|_| ())
    }

    /// [`Bus::ensure_consumer`], returning the consumer handle.
    pub(crate) async fn consumer_handle(&self) -> Result<PullConsumer, BusError> {
        let config = self.durable_config();
        self.create_durable(&self.streams.events, config).await
    }

    /// Creates or updates the durable pull consumer `config` describes on `stream_name`,
    /// tolerating a concurrent create of the same consumer.
    async fn create_durable(
        &self,
        stream_name: &str,
        config: consumer::pull::Config,
    ) -> Result<PullConsumer, BusError> {
        let durable = config.durable_name.clone().unwrap_or_default();
        let setup_error = |source: super::BoxError| BusError::ConsumerSetup {
            stream: stream_name.to_string(),
            consumer: durable.clone(),
            source,
        };
        let stream = self
            .js
            .get_stream_no_info(stream_name)
            .await
            .map_err(|e| setup_error(Box::new(e)))?;
        let mut last = None;
        for _ in 0..RACE_ATTEMPTS {
            match stream.create_consumer(config.clone()).await {
                Ok(consumer) => return Ok(consumer),
                // Two replicas creating the same durable at once: the loser may be told it
                // exists; the next attempt sees it and updates (or accepts) it.
                Err(e)
                    if matches!(&e.kind(), stream::ConsumerErrorKind::JetStream(je)
                        if je.error_code() == ErrorCode::CONSUMER_NAME_EXIST
                            || je.error_code() == ErrorCode::CONSUMER_ALREADY_EXISTS) =>
                {
                    last = Some(e);
                }
                Err(e) => return Err(setup_error(Box::new(e))),
            }
        }
        Err(setup_error(match last {
            Some(e) => Box::new(e),
            None => "concurrent set-up did not settle".into(),
        }))
    }

    /// Creates or updates the durable pull consumer `name` of a `runwatch deliver` target
    /// on the triggers stream: explicit acks, `ack_wait`, unlimited `max_deliver` (the
    /// deliverer counts attempts and dead-letters), `max_ack_pending` 10000 (triggers
    /// waiting for a retry hold a slot, so this is not the concurrency bound), starting at
    /// new triggers or at the first one the stream holds (`from_start`). The start policy
    /// of an existing consumer is kept (JetStream cannot change it).
    pub async fn delivery_consumer(
        &self,
        name: &str,
        description: String,
        ack_wait: Duration,
        from_start: bool,
    ) -> Result<PullConsumer, BusError> {
        let stream = self.streams.triggers.clone();
        let mut deliver_policy = if from_start {
            DeliverPolicy::All
        } else {
            DeliverPolicy::New
        };
        if let Ok(s) = self.js.get_stream_no_info(&stream).await
            && let Ok(mut existing) = s.get_consumer::<consumer::pull::Config>(name).await
            && let Ok(info) = existing.info().await
        {
            if info.config.ack_wait == ack_wait {
                return Ok(existing);
            }
            deliver_policy = info.config.deliver_policy;
        }
        let config = consumer::pull::Config {
            durable_name: Some(name.to_string()),
            description: Some(description),
            deliver_policy,
            ack_policy: AckPolicy::Explicit,
            ack_wait,
            max_deliver: -1,
            max_ack_pending: 10_000,
            ..Default::default()
        };
        self.create_durable(&stream, config).await
    }

    /// The durable consumer's configuration.
    fn durable_config(&self) -> consumer::pull::Config {
        consumer::pull::Config {
            durable_name: Some(self.consumer.durable.clone()),
            description: Some("runwatch worker: workflow-run events".to_string()),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.consumer.ack_wait,
            max_deliver: -1,
            max_ack_pending: self.consumer.max_ack_pending,
            ..Default::default()
        }
    }
}

fn is_stream_not_found(kind: &GetStreamErrorKind) -> bool {
    matches!(kind, GetStreamErrorKind::JetStream(e)
        if e.error_code() == ErrorCode::STREAM_NOT_FOUND || e.code() == 404)
}

/// The settings runwatch owns on a stream.
struct Wanted {
    subjects: Vec<String>,
    duplicate_window: Duration,
    replicas: usize,
    max_age: Duration,
    max_bytes: i64,
}

impl Wanted {
    fn new_config(&self, name: &str) -> stream::Config {
        stream::Config {
            name: name.to_string(),
            subjects: self.subjects.clone(),
            storage: StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            duplicate_window: self.duplicate_window,
            num_replicas: self.replicas,
            max_age: self.max_age,
            max_bytes: self.max_bytes,
            ..Default::default()
        }
    }

    /// The existing config with runwatch's settings applied, or `None` when nothing changes.
    fn apply(&self, current: &stream::Config, name: &str) -> Option<stream::Config> {
        let have: BTreeSet<&String> = current.subjects.iter().collect();
        let want: BTreeSet<&String> = self.subjects.iter().collect();
        if current.storage != StorageType::File {
            tracing::warn!(stream = %name, storage = ?current.storage,
                "stream does not use file storage; storage cannot be changed in place");
        }
        // A duplicate window longer than the stream's max age is rejected by the server
        // (the configuration checks it too).
        let window = self.duplicate_window.min(self.max_age);
        if have == want
            && current.duplicate_window == window
            && current.num_replicas.max(1) == self.replicas
            && current.max_age == self.max_age
            && current.max_bytes == self.max_bytes
        {
            return None;
        }
        let mut updated = current.clone();
        updated.subjects = self.subjects.clone();
        updated.duplicate_window = window;
        updated.num_replicas = self.replicas;
        updated.max_age = self.max_age;
        updated.max_bytes = self.max_bytes;
        Some(updated)
    }
}

/// Deletes one stream (tests and tools). Missing streams are not an error.
pub(crate) async fn delete_stream_if_exists(
    js: &jetstream::Context,
    name: &str,
) -> Result<(), BusError> {
    match js.delete_stream(name).await {
        Ok(_) => Ok(()),
        Err(e) if is_stream_not_found(&e.kind()) => Ok(()),
        Err(e) => Err(BusError::StreamSetup {
            stream: name.to_string(),
            message: format!("delete failed: {e}"),
            source: Some(Box::new(e)),
        }),
    }
}

impl Bus {
    /// Deletes the three streams (and with them the consumer). For tests and tools; missing
    /// streams are skipped.
    pub async fn delete_streams(&self) -> Result<(), BusError> {
        for kind in [StreamKind::Events, StreamKind::Triggers, StreamKind::Dead] {
            delete_stream_if_exists(&self.js, self.stream_name(kind)).await?;
        }
        Ok(())
    }
}

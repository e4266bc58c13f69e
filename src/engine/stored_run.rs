//! How a run's state is stored: a JSON array of its fields in a fixed order, not an object.
//! A group's state is most of its row, and a run's field names were written once per run in
//! every group (docs/performance.md "Storage per group"): as an array, a run of five-run
//! group takes 133 bytes of jsonb instead of 217.
//!
//! `[attempt, workflow, status, conclusion, url, updated_at, event_id, branch,
//! failed_attempt, passed]`, `null` for a field that is not set; the last two are left out
//! when not set (a run that never failed and passed again, the common case, has 8).
//! `updated_at` is written as whole seconds since the epoch when it has no fraction (GitHub's
//! timestamps have none), as RFC 3339 text otherwise: a number is shorter in jsonb and far
//! cheaper to read and write than the text. Runs stored as objects (with the field names,
//! before this encoding) and timestamps stored as text are read too.

use chrono::{DateTime, Utc};
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::flaky::Flip;
use super::merge::RunState;
use crate::event::{Conclusion, Status};

impl Serialize for RunState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let len = if self.passed.is_some() {
            10
        } else if self.failed_attempt.is_some() {
            9
        } else {
            8
        };
        let mut seq = serializer.serialize_seq(Some(len))?;
        seq.serialize_element(&self.attempt)?;
        seq.serialize_element(&self.workflow)?;
        seq.serialize_element(&self.status)?;
        seq.serialize_element(&self.conclusion)?;
        seq.serialize_element(&self.url)?;
        if self.updated_at.timestamp_subsec_nanos() == 0 {
            seq.serialize_element(&self.updated_at.timestamp())?;
        } else {
            seq.serialize_element(&self.updated_at)?;
        }
        seq.serialize_element(&self.event_id)?;
        seq.serialize_element(&self.branch)?;
        if len > 8 {
            seq.serialize_element(&self.failed_attempt)?;
        }
        if len > 9 {
            seq.serialize_element(&self.passed)?;
        }
        seq.end()
    }
}

/// A run as it was stored before: an object with the field names.
#[derive(Deserialize)]
struct NamedRun {
    attempt: u32,
    workflow: String,
    status: Status,
    #[serde(default)]
    conclusion: Option<Conclusion>,
    #[serde(default)]
    url: Option<String>,
    updated_at: DateTime<Utc>,
    event_id: String,
    #[serde(default)]
    branch: Option<String>,
    #[serde(default)]
    failed_attempt: Option<u32>,
    #[serde(default)]
    passed: Option<Flip>,
}

impl From<NamedRun> for RunState {
    fn from(r: NamedRun) -> RunState {
        RunState {
            attempt: r.attempt,
            workflow: r.workflow,
            status: r.status,
            conclusion: r.conclusion,
            url: r.url,
            updated_at: r.updated_at,
            event_id: r.event_id,
            branch: r.branch,
            failed_attempt: r.failed_attempt,
            passed: r.passed,
        }
    }
}

/// `updated_at` as stored: seconds since the epoch, or RFC 3339 text.
struct StoredTime(DateTime<Utc>);

impl<'de> Deserialize<'de> for StoredTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<StoredTime, D::Error> {
        deserializer.deserialize_any(TimeVisitor)
    }
}

struct TimeVisitor;

impl<'de> Visitor<'de> for TimeVisitor {
    type Value = StoredTime;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("seconds since the epoch or an RFC 3339 timestamp")
    }

    fn visit_i64<E: de::Error>(self, secs: i64) -> Result<StoredTime, E> {
        DateTime::from_timestamp(secs, 0)
            .map(StoredTime)
            .ok_or_else(|| E::custom(format!("timestamp {secs} is out of range")))
    }

    fn visit_u64<E: de::Error>(self, secs: u64) -> Result<StoredTime, E> {
        let secs = i64::try_from(secs)
            .map_err(|_| E::custom(format!("timestamp {secs} is out of range")))?;
        self.visit_i64(secs)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<StoredTime, E> {
        DateTime::<Utc>::deserialize(de::value::StrDeserializer::<E>::new(text)).map(StoredTime)
    }
}

struct RunVisitor;

impl<'de> Visitor<'de> for RunVisitor {
    type Value = RunState;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a run's state: an array of 8 to 10 fields, or an object")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RunState, A::Error> {
        let missing = |i: usize| de::Error::invalid_length(i, &RunVisitor);
        let run = RunState {
            attempt: seq.next_element()?.ok_or_else(|| missing(0))?,
            workflow: seq.next_element()?.ok_or_else(|| missing(1))?,
            status: seq.next_element()?.ok_or_else(|| missing(2))?,
            conclusion: seq.next_element()?.ok_or_else(|| missing(3))?,
            url: seq.next_element()?.ok_or_else(|| missing(4))?,
            updated_at: seq
                .next_element::<StoredTime>()?
                .ok_or_else(|| missing(5))?
                .0,
            event_id: seq.next_element()?.ok_or_else(|| missing(6))?,
            branch: seq.next_element()?.ok_or_else(|| missing(7))?,
            failed_attempt: seq.next_element::<Option<u32>>()?.flatten(),
            passed: seq.next_element::<Option<Flip>>()?.flatten(),
        };
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::invalid_length(11, &RunVisitor));
        }
        Ok(run)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RunState, A::Error> {
        NamedRun::deserialize(de::value::MapAccessDeserializer::new(map)).map(RunState::from)
    }
}

impl<'de> Deserialize<'de> for RunState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RunState, D::Error> {
        deserializer.deserialize_any(RunVisitor)
    }
}

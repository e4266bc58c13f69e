//! The dead-letter stream's commands: `runwatch dead list` (one line per letter: reason,
//! original subject and sequence, deliveries, detail, payload excerpt; for a delivery dead
//! letter also its target, HTTP status and response excerpt) and `runwatch dead redrive`
//! (republish letters to their original subjects with a fresh `Nats-Msg-Id`, a delivery
//! dead letter to its target only, then remove them).

use std::io::Write;

use crate::bus::{Bus, BusError, DeadMessage};

#[derive(Debug, thiserror::Error)]
pub enum DeadError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("output: {0}")]
    Output(#[from] std::io::Error),
    #[error("no dead letter with sequence {0}")]
    NoSuchDeadLetter(u64),
    #[error("encoding: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Writes one line per stored dead letter: its sequence, reason, original subject and
/// sequence, deliveries, detail and a payload excerpt. Returns how many.
pub async fn dead_list(bus: &Bus, excerpt: usize, out: &mut dyn Write) -> Result<usize, DeadError> {
    let dead = bus.read_all_dead().await?;
    for d in &dead {
        writeln!(out, "{}", dead_line(d, excerpt)?)?;
    }
    Ok(dead.len())
}

/// One `dead list` line.
pub fn dead_line(d: &DeadMessage, excerpt: usize) -> Result<String, DeadError> {
    let opt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |n| n.to_string());
    let mut line = format!(
        "seq={} reason={} subject={} original_seq={} deliveries={} detail={} payload={}",
        d.sequence,
        d.reason,
        d.original_subject,
        opt(d.original_seq),
        opt(d.deliveries),
        serde_json::to_string(&d.detail)?,
        serde_json::to_string(&d.excerpt(excerpt))?,
    );
    if let Some(target) = &d.target {
        let status = d
            .http_status
            .map_or_else(|| "-".to_string(), |s| s.to_string());
        line.push_str(&format!(
            " target={target} http_status={status} response={}",
            serde_json::to_string(d.response.as_deref().unwrap_or(""))?
        ));
    }
    if let Some(n) = d.truncated_from {
        line.push_str(&format!(" truncated_from={n}"));
    }
    Ok(line)
}

/// Which dead letters `dead redrive` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedriveSelection {
    /// The one with this dead-letter stream sequence.
    Sequence(u64),
    /// Every stored dead letter.
    All,
}

/// What `dead redrive` did.
#[derive(Debug, Clone, Default)]
pub struct RedriveReport {
    /// (dead-letter sequence, new events-stream sequence) of each redriven letter.
    pub redriven: Vec<(u64, u64)>,
    /// (dead-letter sequence, why) of each letter that was refused.
    pub refused: Vec<(u64, String)>,
}

/// Republishes the selected dead letters to their original subjects and deletes them from
/// the dead-letter stream (see [`Bus::redrive`]).
pub async fn redrive(bus: &Bus, selection: RedriveSelection) -> Result<RedriveReport, DeadError> {
    let dead = bus.read_all_dead().await?;
    let chosen: Vec<&DeadMessage> = match selection {
        RedriveSelection::All => dead.iter().collect(),
        RedriveSelection::Sequence(seq) => {
            let found: Vec<&DeadMessage> = dead.iter().filter(|d| d.sequence == seq).collect();
            if found.is_empty() {
                return Err(DeadError::NoSuchDeadLetter(seq));
            }
            found
        }
    };
    let mut report = RedriveReport::default();
    for d in chosen {
        match bus.redrive(d).await {
            Ok(ack) => report.redriven.push((d.sequence, ack.sequence)),
            Err(e @ BusError::Invalid { .. }) => report.refused.push((d.sequence, e.to_string())),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(report)
}

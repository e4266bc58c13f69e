//! Where a fired rule's trigger is: published, in the outbox, set aside or purged.

use uuid::Uuid;

use super::types::{Delivery, FiredTrigger, OutboxRow, show_time};

pub(super) fn fired_trigger(id: Uuid, outbox: &[OutboxRow]) -> FiredTrigger {
    let row = outbox.iter().find(|r| r.trigger_id == id);
    let trigger = row.and_then(|r| r.trigger.as_ref());
    FiredTrigger {
        trigger_id: id,
        episode: None,
        branch: None,
        workflow: None,
        fired_at: row.map(|r| trigger.map_or(r.created_at, |t| t.fired_at)),
        delivery: match row {
            None => Delivery::Missing,
            Some(r) if r.sent_at.is_some() => Delivery::Sent,
            Some(r) if r.set_aside_at.is_some() => Delivery::SetAside,
            Some(_) => Delivery::Unsent,
        },
        sent_at: row.and_then(|r| r.sent_at),
        attempts: row.map(|r| r.attempts),
        last_error: row.and_then(|r| r.last_error.clone()),
        set_aside_reason: row.and_then(|r| r.set_aside_reason.clone()),
    }
}

/// "trigger ID, published at T" and the other delivery states, in words.
pub(super) fn delivery_words(t: &FiredTrigger) -> String {
    let id = t.trigger_id;
    match t.delivery {
        Delivery::Sent => match t.sent_at {
            Some(at) => format!("trigger {id}, published at {}", show_time(at)),
            None => format!("trigger {id}, published"),
        },
        Delivery::Unsent => {
            let mut s = format!(
                "trigger {id}, still in the outbox, not published yet (relay attempts: {})",
                t.attempts.unwrap_or(0)
            );
            if let Some(e) = &t.last_error {
                s.push_str(&format!("; last error: {e}"));
            }
            s
        }
        Delivery::SetAside => format!(
            "trigger {id}, set aside in the outbox and not published: {}",
            t.set_aside_reason
                .as_deref()
                .unwrap_or("no reason recorded")
        ),
        Delivery::Missing => format!("trigger {id}, no longer in the outbox (purged)"),
    }
}

pub(super) fn at_words(t: &FiredTrigger) -> String {
    t.fired_at
        .map_or_else(String::new, |at| format!(" at {}", show_time(at)))
}

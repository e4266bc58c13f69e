//! Quiescence: the consumer has nothing pending, the outbox nothing unsent and no timer is
//! set.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use runwatch::bus::Bus;
use sqlx::Row;

use super::faults::{Procs, note};
use super::{Error, log};

/// What is left to do, each `None` when it could not be read.
#[derive(Debug, PartialEq)]
struct Left {
    pending: Option<u64>,
    unsent: Option<i64>,
    timers: Option<i64>,
}

impl Left {
    fn none(&self) -> bool {
        *self
            == Left {
                pending: Some(0),
                unsent: Some(0),
                timers: Some(0),
            }
    }
}

async fn left(bus: &Bus, pool: &sqlx::PgPool) -> Left {
    let pending = bus.consumer_pending().await.ok();
    let row = sqlx::query(
        "SELECT (SELECT count(*) FROM outbox WHERE sent_at IS NULL) AS unsent,
                (SELECT count(*) FROM groups WHERE due_wall_at IS NOT NULL) AS timers",
    )
    .fetch_one(pool)
    .await;
    let (unsent, timers) = match &row {
        Ok(r) => (
            Some(r.get::<i64, _>("unsent")),
            Some(r.get::<i64, _>("timers")),
        ),
        Err(_) => (None, None),
    };
    Left {
        pending,
        unsent,
        timers,
    }
}

/// Waits until nothing is left three times in a row; workers that exit by themselves are
/// started again.
pub async fn wait_quiet(
    bus: &Bus,
    procs: &Mutex<Procs>,
    db_url: &str,
    limit: Duration,
    started: Instant,
    notes: &Mutex<Vec<String>>,
) -> Result<(), Error> {
    let options: sqlx::postgres::PgConnectOptions = db_url.parse()?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options.application_name("chaos-harness"));
    let begun = Instant::now();
    let mut calm = 0;
    let mut last = String::new();
    let outcome = loop {
        procs
            .lock()
            .map_err(|_| "procs lock poisoned")?
            .restart_exited(&|s| note(notes, started, s))?;
        let left = left(bus, &pool).await;
        calm = if left.none() { calm + 1 } else { 0 };
        if calm >= 3 {
            break Ok(());
        }
        let now = format!(
            "pending={:?} unsent={:?} timers={:?}",
            left.pending, left.unsent, left.timers
        );
        if now != last && begun.elapsed().as_secs().is_multiple_of(10) {
            log(started, &format!("waiting: {now}"));
            last = now.clone();
        }
        if begun.elapsed() > limit {
            break Err(format!("not quiet after {limit:?}: {now}").into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    pool.close().await;
    outcome
}

//! One measured phase: a trace published to fresh streams, worked off by fresh workers.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage};
use futures::StreamExt;

use crate::Opts;
use crate::database::{explain, prefill};
use crate::names::Names;
use crate::report::{During, PhaseResult, print_metrics};
use crate::trace::Trace;
use crate::workers::{Workers, migrate};

#[derive(Clone)]
pub struct Phase<'a> {
    pub name: &'a str,
    pub workers: usize,
    pub batch_size: Option<usize>,
    /// Events per second to publish at; `None` = as fast as possible.
    pub pace: Option<f64>,
    pub prefill: u64,
    pub explain: bool,
    /// Worker settings of this phase (after, so over, `--set`).
    pub env: Vec<(String, String)>,
    /// Run the workers under callgrind, counts to `<path>.<worker>`.
    pub callgrind: Option<std::path::PathBuf>,
    /// A `runwatch` command (its arguments) run with the phase's settings while the trace
    /// is published, from the first publish; the phase waits for it after the trace is
    /// worked off (`purge` under load).
    pub during: Option<Vec<&'a str>>,
}

impl<'a> Phase<'a> {
    /// One worker, full speed, empty database.
    pub fn new(name: &'a str, batch_size: Option<usize>) -> Phase<'a> {
        Phase {
            name,
            workers: 1,
            batch_size,
            pace: None,
            prefill: 0,
            explain: false,
            env: Vec::new(),
            callgrind: None,
            during: None,
        }
    }
}

pub struct Bench {
    pub opts: Opts,
    pub bin: PathBuf,
    pub js: jetstream::Context,
    pub client: async_nats::Client,
}

/// Triggers: commit sha → when the harness received it.
pub(crate) type Received = Arc<Mutex<HashMap<String, Instant>>>;

/// When the publishing started and ended, and when each group's last event was sent.
pub(crate) struct Sent {
    pub(crate) t0: Instant,
    published: Duration,
    at: HashMap<usize, Instant>,
}

impl Bench {
    /// Runs `phase` on names of its own and removes them afterwards.
    pub async fn run_phase(&self, phase: &Phase<'_>, trace: &Trace) -> Result<PhaseResult> {
        let names = Names::new();
        let out = self.run_phase_in(phase, trace, &names).await;
        names.remove(&self.js).await;
        out
    }

    /// Runs `first`, then `second` on the same database (its pre-fill and what `first`
    /// wrote; `second`'s own pre-fill is ignored) with streams of its own.
    pub async fn run_phase_pair(
        &self,
        (first, first_trace): (&Phase<'_>, &Trace),
        (second, second_trace): (&Phase<'_>, &Trace),
    ) -> Result<(PhaseResult, PhaseResult)> {
        let names = Names::new();
        let one = self.run_phase_in(first, first_trace, &names).await;
        let mut again = Names::new();
        again.db.clone_from(&names.db);
        again.url.clone_from(&names.url);
        let second = Phase {
            prefill: 0,
            ..second.clone()
        };
        let two = match &one {
            Ok(_) => Some(self.run_phase_in(&second, second_trace, &again).await),
            Err(_) => None,
        };
        again.remove(&self.js).await;
        names.remove(&self.js).await;
        let one = one?;
        match two {
            Some(two) => Ok((one, two?)),
            None => unreachable!("the second run is skipped only when the first failed"),
        }
    }

    pub(crate) fn worker_env(&self, names: &Names, phase: &Phase<'_>) -> Vec<(String, String)> {
        let mut env = names.env();
        if let (Some(port), "main" | "half") = (self.opts.metrics_port, phase.name) {
            env.push(("RUNWATCH_HTTP__LISTEN".into(), format!("127.0.0.1:{port}")));
        }
        if let Some(b) = phase.batch_size {
            env.push(("RUNWATCH_CONSUMER__BATCH_SIZE".into(), b.to_string()));
        }
        for kv in &self.opts.set {
            if let Some((k, v)) = kv.split_once('=') {
                env.push((k.to_string(), v.to_string()));
            }
        }
        env.extend(phase.env.iter().cloned());
        env
    }

    async fn run_phase_in(
        &self,
        phase: &Phase<'_>,
        trace: &Trace,
        names: &Names,
    ) -> Result<PhaseResult> {
        let env = self.worker_env(names, phase);
        migrate(&self.bin, &env).await?;
        let prefilled = if phase.prefill > 0 {
            Some(prefill(&names.url, phase.prefill).await?)
        } else {
            None
        };
        let workers = Workers::start(
            &self.bin,
            &env,
            phase.workers,
            &names.db,
            phase.callgrind.as_deref(),
        )?;
        self.wait_consumer(names, &workers).await?;
        let last_of_firing = trace.last_of_firing();
        let (received, collector) = self.collect_triggers(names).await?;
        let during = match &phase.during {
            Some(args) => {
                let (bin, env) = (self.bin.clone(), env.clone());
                let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
                Some(tokio::spawn(async move {
                    let started = Instant::now();
                    let out = tokio::process::Command::new(&bin)
                        .args(&args)
                        .envs(env)
                        .output()
                        .await?;
                    if !out.status.success() {
                        bail!(
                            "runwatch {} failed: {}: {}",
                            args.join(" "),
                            out.status,
                            String::from_utf8_lossy(&out.stderr)
                        );
                    }
                    Ok(During {
                        seconds: started.elapsed().as_secs_f64(),
                        stdout: String::from_utf8_lossy(&out.stdout).trim().to_string(),
                    })
                }))
            }
            None => None,
        };
        let sent = self.publish(phase, trace, names, &last_of_firing).await?;
        let n = trace.messages.len();
        let consumer = (names.events.as_str(), names.durable.as_str());
        let seconds = self
            .wait_done(phase.name, consumer, n, sent.t0, workers.log())
            .await?;
        // Triggers trail the last ack by a publish at most; give them a moment.
        let expected = last_of_firing.len();
        let wait_from = Instant::now();
        while received.lock().map(|m| m.len()).unwrap_or(0) < expected
            && wait_from.elapsed() < Duration::from_secs(10)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        collector.abort();
        let during = match during {
            Some(task) => Some(task.await??),
            None => None,
        };
        if let (Some(port), "main" | "half") = (self.opts.metrics_port, phase.name) {
            print_metrics(port).await;
        }
        let (cpu, rss_kib) = workers.measure();
        if phase.explain {
            explain(&names.url).await?;
        }
        workers.stop().await;
        let received = received.lock().map(|m| m.clone()).unwrap_or_default();
        Ok(PhaseResult {
            events: n,
            seconds,
            events_per_s: n as f64 / seconds,
            publish_per_s: n as f64 / sent.published.as_secs_f64(),
            latencies_ms: latencies(&last_of_firing, &received, &sent.at),
            triggers: received.len(),
            expected,
            rss_kib,
            worker_cpu_s: cpu,
            prefilled,
            during,
        })
    }

    /// The worker creates the streams and the durable consumer; waits up to 60 s for them.
    pub(crate) async fn wait_consumer(&self, names: &Names, workers: &Workers) -> Result<()> {
        let started = Instant::now();
        loop {
            if self
                .js
                .get_consumer_from_stream::<jetstream::consumer::pull::Config, _, _>(
                    &names.durable,
                    &names.events,
                )
                .await
                .is_ok()
            {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!(
                    "the worker did not create its consumer within 60s (log: {:?})",
                    workers.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Subscribes to the triggers subject; the first arrival per commit sha is recorded.
    pub(crate) async fn collect_triggers(
        &self,
        names: &Names,
    ) -> Result<(Received, tokio::task::JoinHandle<()>)> {
        let received: Received = Arc::default();
        let mut sub = self
            .client
            .subscribe(format!("{}.>", names.triggers_prefix))
            .await?;
        self.client.flush().await?;
        let rx = received.clone();
        let collector = tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let now = Instant::now();
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&msg.payload)
                    && let Some(sha) = v["commit_sha"].as_str()
                    && let Ok(mut m) = rx.lock()
                {
                    m.entry(sha.to_string()).or_insert(now);
                }
            }
        });
        Ok((received, collector))
    }

    /// Publishes the trace, pipelined: at most 4,096 PubAcks outstanding; paced if asked.
    pub(crate) async fn publish(
        &self,
        phase: &Phase<'_>,
        trace: &Trace,
        names: &Names,
        last: &HashMap<String, usize>,
    ) -> Result<Sent> {
        let subject = format!("{}.github", names.events_prefix);
        let mut at: HashMap<usize, Instant> = HashMap::with_capacity(last.len());
        let wanted: HashSet<usize> = last.values().copied().collect();
        let mut acks: VecDeque<PublishAckFuture> = VecDeque::new();
        let t0 = Instant::now();
        let mut publish_errors = 0usize;
        // Paced: a sleep about every millisecond's worth of messages (each message at 200/s,
        // every 7th at 7,000/s), so a slow pace is not published in bursts.
        let every = phase
            .pace
            .map_or(1, |rate| ((rate / 1000.0).ceil() as usize).max(1));
        for (i, m) in trace.messages.iter().enumerate() {
            if let Some(rate) = phase.pace
                && i % every == 0
            {
                tokio::time::sleep_until((t0 + Duration::from_secs_f64(i as f64 / rate)).into())
                    .await;
            }
            if wanted.contains(&i) {
                at.insert(i, Instant::now());
            }
            let msg = PublishMessage::build()
                .payload(m.body.clone())
                .message_id(m.id.as_str());
            acks.push_back(self.js.send_publish(subject.clone(), msg).await?);
            while acks.len() > 4096 {
                if let Some(a) = acks.pop_front()
                    && a.await.is_err()
                {
                    publish_errors += 1;
                }
            }
        }
        for a in acks {
            if a.await.is_err() {
                publish_errors += 1;
            }
        }
        let published = t0.elapsed();
        if publish_errors > 0 {
            bail!("{publish_errors} events were not acknowledged by JetStream");
        }
        Ok(Sent { t0, published, at })
    }

    /// Polls until the consumer has nothing pending and nothing unacknowledged; the seconds
    /// from `t0`.
    pub(crate) async fn wait_done(
        &self,
        what: &str,
        (stream, durable): (&str, &str),
        n: usize,
        t0: Instant,
        log: Option<&Path>,
    ) -> Result<f64> {
        let limit = Duration::from_secs(120 + (n / 200) as u64);
        loop {
            let mut c = self
                .js
                .get_consumer_from_stream::<jetstream::consumer::pull::Config, _, _>(
                    durable, stream,
                )
                .await?;
            let info = c.info().await?;
            if info.num_pending == 0
                && info.num_ack_pending == 0
                && info.ack_floor.stream_sequence >= n as u64
            {
                return Ok(t0.elapsed().as_secs_f64());
            }
            if t0.elapsed() > limit {
                bail!(
                    "{what}: not done after {limit:?}: pending {} unacked {} (logs: {log:?})",
                    info.num_pending,
                    info.num_ack_pending,
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// For each firing group, ms from sending its last event to receiving its trigger; sorted.
fn latencies(
    last: &HashMap<String, usize>,
    received: &HashMap<String, Instant>,
    sent_at: &HashMap<usize, Instant>,
) -> Vec<f64> {
    let mut latencies: Vec<f64> = last
        .iter()
        .filter_map(|(sha, i)| {
            let r = received.get(sha)?;
            let s = sent_at.get(i)?;
            Some(r.saturating_duration_since(*s).as_secs_f64() * 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    latencies
}

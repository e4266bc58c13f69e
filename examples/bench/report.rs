//! The figures of a phase and the lines the bench prints.

use crate::drain::DrainResult;

/// What one phase measured.
#[derive(Debug, Default)]
pub struct PhaseResult {
    pub events: usize,
    pub seconds: f64,
    pub events_per_s: f64,
    pub publish_per_s: f64,
    /// Sorted.
    pub latencies_ms: Vec<f64>,
    pub triggers: usize,
    pub expected: usize,
    pub rss_kib: Vec<u64>,
    /// CPU seconds the worker process(es) used, start-up included.
    pub worker_cpu_s: f64,
    /// What the phase's pre-fill left, if it had one.
    pub prefilled: Option<crate::database::Prefilled>,
    /// The command run during the phase, if any.
    pub during: Option<During>,
}

/// A command run while a phase's trace was published: how long it took, what it printed.
#[derive(Debug, Clone)]
pub struct During {
    pub seconds: f64,
    pub stdout: String,
}

impl PhaseResult {
    pub fn pct(&self, p: f64) -> f64 {
        percentile(&self.latencies_ms, p)
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Sums and counts of the worker's histograms (mean time per transaction, batch size...).
pub async fn print_metrics(port: u16) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut conn) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        println!("metrics: cannot connect to 127.0.0.1:{port}");
        return;
    };
    let _ = conn
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await;
    let mut body = String::new();
    let _ = conn.read_to_string(&mut body).await;
    let mut sums: std::collections::BTreeMap<String, (f64, f64)> = Default::default();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        if let Some(base) = name
            .strip_suffix("_sum")
            .or_else(|| name.split_once("_sum{").map(|(b, _)| b))
        {
            let key = format!(
                "{base}{}",
                name.split_once('{')
                    .map_or(String::new(), |(_, l)| format!("{{{l}"))
            );
            sums.entry(key).or_default().0 = v;
        } else if let Some(base) = name
            .strip_suffix("_count")
            .or_else(|| name.split_once("_count{").map(|(b, _)| b))
        {
            let key = format!(
                "{base}{}",
                name.split_once('{')
                    .map_or(String::new(), |(_, l)| format!("{{{l}"))
            );
            sums.entry(key).or_default().1 = v;
        }
    }
    for (k, (sum, count)) in sums {
        if count > 0.0 {
            println!("metrics: {k} count={count} mean={:.6}", sum / count);
        }
    }
    print_buckets(&body);
}

/// The cumulative buckets of the decision transaction and of the end-to-end decision time.
fn print_buckets(body: &str) {
    for metric in [
        "runwatch_transaction_seconds_bucket{op=\"record\"",
        "runwatch_decision_seconds_bucket{",
    ] {
        let buckets: Vec<String> = body
            .lines()
            .filter(|l| l.starts_with(metric))
            .filter_map(|l| {
                let le = l.split("le=\"").nth(1)?.split('"').next()?;
                let n = l.rsplit_once(' ')?.1;
                Some(format!("<={le}:{n}"))
            })
            .collect();
        if !buckets.is_empty() {
            println!(
                "metrics: {} cumulative {}",
                metric.trim_end_matches('{'),
                buckets.join(" ")
            );
        }
    }
}

pub fn describe(name: &str, r: &PhaseResult) {
    let rss = r
        .rss_kib
        .iter()
        .map(|k| format!("{:.1}", *k as f64 / 1024.0))
        .collect::<Vec<_>>()
        .join(",");
    println!(
        "{name}: events={} seconds={:.2} events_per_s={:.0} publish_per_s={:.0} triggers={}/{} p50_ms={:.1} p99_ms={:.1} max_ms={:.1} rss_mib={rss} worker_cpu_s={:.1}",
        r.events,
        r.seconds,
        r.events_per_s,
        r.publish_per_s,
        r.triggers,
        r.expected,
        r.pct(50.0),
        r.pct(99.0),
        r.latencies_ms.last().copied().unwrap_or(f64::NAN),
        r.worker_cpu_s,
    );
}

pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Everything the last line is made of.
pub struct Figures<'a> {
    pub main: &'a PhaseResult,
    pub half: Option<&'a PhaseResult>,
    pub low: Option<&'a PhaseResult>,
    pub naive: Option<&'a PhaseResult>,
    pub drain: Option<&'a DrainResult>,
    /// Half load again, on a database pre-filled with `--size-prefill` groups.
    pub size: Option<&'a PhaseResult>,
    /// The same again on the same database while `runwatch purge` deletes a day of groups.
    pub retention: Option<&'a PhaseResult>,
    /// `pgbench -N -c 8 -T 10` and `-c 1`; 0 when skipped.
    pub pg_tps: f64,
    pub pg_c1_tps: f64,
}

/// `a / b`, or 0 when there is no reference.
fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// The last line: the main figures, the references and the ratios.
pub fn summary(f: &Figures<'_>) -> String {
    let main = f.main;
    let a = main.events_per_s;
    let c = f.naive.map_or(0.0, |r| r.events_per_s);
    let rss = main.rss_kib.first().map_or(0.0, |k| *k as f64 / 1024.0);
    let pct = |r: Option<&PhaseResult>, p: f64| r.map_or(f64::NAN, |r| r.pct(p));
    let (raw, drain) = f.drain.map_or((0.0, 0.0), |d| (d.raw_per_s, d.drain_per_s));
    let cpu_us = ratio(main.worker_cpu_s * 1e6, main.events as f64);
    let prefilled = f.size.and_then(|r| r.prefilled.as_ref());
    let size = format!(
        " prefill_groups={} prefill_ratio={:.2} p99_half_load_prefill_ms={:.1} prefill_p99_ratio={:.2} bytes_per_group={:.0}",
        prefilled.map_or(0, |p| p.groups),
        ratio(
            f.size.map_or(0.0, |r| r.events_per_s),
            f.half.map_or(0.0, |r| r.events_per_s)
        ),
        pct(f.size, 99.0),
        ratio(pct(f.half, 99.0), pct(f.size, 99.0)),
        prefilled.map_or(f64::NAN, |p| p.bytes_per_group),
    );
    let purge = f.retention.and_then(|r| r.during.as_ref());
    let retention = format!(
        " p99_half_load_purging_ms={:.1} retention_p99_ratio={:.2} purged_groups={} purge_s={:.1}",
        pct(f.retention, 99.0),
        ratio(pct(f.size, 99.0), pct(f.retention, 99.0)),
        purge.map_or("0", |d| d.stdout.as_str()),
        purge.map_or(0.0, |d| d.seconds),
    );
    let line = format!(
        "bench: events_per_s={a:.0} pgbench_tps={:.0} ratio={:.2} naive_events_per_s={c:.0} speedup={:.2} p50_ms={:.1} p99_ms={:.1} p99_half_load_ms={:.1} rss_mib={rss:.1} \
         pgbench_c1_tps={:.0} naive_ratio={:.2} raw_bus_per_s={raw:.0} drain_events_per_s={drain:.0} drain_ratio={:.2} \
         p50_half_load_ms={:.1} p50_low_load_ms={:.1} p99_low_load_ms={:.1} cpu_us_per_event={cpu_us:.0}",
        f.pg_tps,
        ratio(a, f.pg_tps),
        ratio(a, c),
        main.pct(50.0),
        main.pct(99.0),
        pct(f.half, 99.0),
        f.pg_c1_tps,
        ratio(c, f.pg_c1_tps),
        ratio(drain, raw),
        pct(f.half, 50.0),
        pct(f.low, 50.0),
        pct(f.low, 99.0),
    );
    line + &size + &retention
}

//! The cost of tracing, measured within one run: the same trace is worked off with span
//! export off and on, alternately (off, on, on, off: a drift of the machine during the
//! phase weighs on both sides alike), at full speed and at the half-load pace, for each
//! sample ratio asked (`--tracing-ratios`). "On" exports to `--otlp-endpoint` or to this
//! harness's sink (`otlp_sink`), which answers and counts, so the figure is the worker's
//! cost, plus the sink's share of the same two cores.
//!
//! Per ratio it prints the on/off ratios of throughput, of worker CPU per event and of
//! the half-load p50 and p99 (means of the two runs of each side).
//!
//! Those timings move with whatever else the machine does. [`instructions`] is the figure
//! that does not: the same (smaller) trace worked off by a worker under
//! `valgrind --tool=callgrind`, export off, then on at each ratio, and the instructions the
//! worker process executed from start to exit (all threads, the span exporter's included),
//! which are the same from run to run whatever the load.

use anyhow::Result;

use crate::phase::{Bench, Phase};
use crate::report::{PhaseResult, describe};
use crate::trace::Trace;
use crate::workers::callgrind_instructions;

/// What one ratio's comparison measured: (off, on) means.
pub struct TracingCost {
    pub sample_ratio: f64,
    pub events_per_s: (f64, f64),
    pub cpu_us_per_event: (f64, f64),
    pub p50_half_ms: (f64, f64),
    pub p99_half_ms: (f64, f64),
}

impl TracingCost {
    pub fn line(&self) -> String {
        let r = |(off, on): (f64, f64)| if off > 0.0 { on / off } else { 0.0 };
        format!(
            "tracing: sample_ratio={} events_per_s_off={:.0} events_per_s_on={:.0} tracing_throughput_ratio={:.3} \
             cpu_us_per_event_off={:.1} cpu_us_per_event_on={:.1} tracing_cpu_ratio={:.3} \
             p50_half_load_off_ms={:.1} p50_half_load_on_ms={:.1} p99_half_load_off_ms={:.1} p99_half_load_on_ms={:.1} tracing_p99_ratio={:.3}",
            self.sample_ratio,
            self.events_per_s.0,
            self.events_per_s.1,
            r(self.events_per_s),
            self.cpu_us_per_event.0,
            self.cpu_us_per_event.1,
            r(self.cpu_us_per_event),
            self.p50_half_ms.0,
            self.p50_half_ms.1,
            self.p99_half_ms.0,
            self.p99_half_ms.1,
            r(self.p99_half_ms),
        )
    }
}

/// Off/on comparisons of `full` (unpaced) and `half` (paced at `rate`) for each ratio.
pub async fn compare(
    bench: &Bench,
    endpoint: &str,
    ratios: &[f64],
    (full, half, rate): (&Trace, &Trace, f64),
) -> Result<Vec<TracingCost>> {
    let mut out = Vec::new();
    for &ratio in ratios {
        let on_env = vec![
            (
                "RUNWATCH_TELEMETRY__OTLP_ENDPOINT".to_string(),
                endpoint.to_string(),
            ),
            (
                "RUNWATCH_TELEMETRY__TRACE_SAMPLE_RATIO".to_string(),
                ratio.to_string(),
            ),
        ];
        let off_env = vec![(
            "RUNWATCH_TELEMETRY__OTLP_ENDPOINT".to_string(),
            String::new(),
        )];
        let mut full_runs: [Vec<PhaseResult>; 2] = Default::default();
        let mut half_runs: [Vec<PhaseResult>; 2] = Default::default();
        for on in [false, true, true, false] {
            let env = if on { &on_env } else { &off_env };
            let side = if on { "on" } else { "off" };
            let phase = Phase {
                env: env.clone(),
                ..Phase::new("tracing", bench.opts.batch_size)
            };
            let r = bench.run_phase(&phase, full).await?;
            describe(&format!("tracing {side} (ratio {ratio}), full speed"), &r);
            full_runs[usize::from(on)].push(r);
            let phase = Phase {
                env: env.clone(),
                pace: Some(rate),
                ..Phase::new("tracing-half", bench.opts.batch_size)
            };
            let r = bench.run_phase(&phase, half).await?;
            describe(
                &format!("tracing {side} (ratio {ratio}), paced at {rate:.0} events/s"),
                &r,
            );
            half_runs[usize::from(on)].push(r);
        }
        let mean = |runs: &[PhaseResult], f: &dyn Fn(&PhaseResult) -> f64| {
            runs.iter().map(f).sum::<f64>() / runs.len().max(1) as f64
        };
        let both = |runs: &[Vec<PhaseResult>; 2], f: &dyn Fn(&PhaseResult) -> f64| {
            (mean(&runs[0], f), mean(&runs[1], f))
        };
        let cost = TracingCost {
            sample_ratio: ratio,
            events_per_s: both(&full_runs, &|r| r.events_per_s),
            cpu_us_per_event: both(&full_runs, &|r| {
                r.worker_cpu_s * 1e6 / (r.events.max(1) as f64)
            }),
            p50_half_ms: both(&half_runs, &|r| r.pct(50.0)),
            p99_half_ms: both(&half_runs, &|r| r.pct(99.0)),
        };
        println!("{}", cost.line());
        out.push(cost);
    }
    Ok(out)
}

/// Instructions of a worker working off `trace` under callgrind: export off, then on at
/// each ratio. Prints one `tracing_instructions:` line per ratio.
pub async fn instructions(
    bench: &Bench,
    endpoint: &str,
    ratios: &[f64],
    trace: &Trace,
) -> Result<Vec<String>> {
    let dir = std::env::temp_dir();
    let run = |label: String, env: Vec<(String, String)>| {
        let out = dir.join(format!("rwbench-callgrind-{}-{label}", std::process::id()));
        async move {
            let phase = Phase {
                env,
                callgrind: Some(out.clone()),
                ..Phase::new("tracing-instructions", bench.opts.batch_size)
            };
            let r = bench.run_phase(&phase, trace).await?;
            describe(&format!("tracing {label}, under callgrind"), &r);
            let file = std::path::PathBuf::from(format!("{}.0", out.display()));
            let ir = callgrind_instructions(&file);
            if std::env::var_os("BENCH_KEEP_LOGS").is_none() {
                let _ = std::fs::remove_file(&file);
            } else {
                println!("callgrind output kept: {}", file.display());
            }
            ir
        }
    };
    let off = run(
        "off".into(),
        vec![(
            "RUNWATCH_TELEMETRY__OTLP_ENDPOINT".to_string(),
            String::new(),
        )],
    )
    .await?;
    let n = trace.messages.len().max(1) as f64;
    let mut out = Vec::new();
    for &ratio in ratios {
        let on = run(
            format!("on-{ratio}"),
            vec![
                (
                    "RUNWATCH_TELEMETRY__OTLP_ENDPOINT".to_string(),
                    endpoint.to_string(),
                ),
                (
                    "RUNWATCH_TELEMETRY__TRACE_SAMPLE_RATIO".to_string(),
                    ratio.to_string(),
                ),
            ],
        )
        .await?;
        let line = format!(
            "tracing_instructions: sample_ratio={ratio} events={} instructions_off={off} instructions_on={on} \
             per_event_off={:.0} per_event_on={:.0} tracing_instructions_ratio={:.4}",
            trace.messages.len(),
            off as f64 / n,
            on as f64 / n,
            on as f64 / off.max(1) as f64
        );
        println!("{line}");
        out.push(line);
    }
    Ok(out)
}

//! The metrics recorder's memory does not grow with the number of observations when
//! nothing scrapes `/metrics`.
//!
//! metrics-exporter-prometheus keeps every histogram observation in a lock-free buffer
//! until something drains it into the histogram's buckets: a render (a scrape) or the
//! recorder's upkeep. A process that nobody scrapes must still drain, or its heap grows by
//! the size of every observation, forever.
//!
//! The test counts the heap bytes live in the process (a counting global allocator, the
//! allocator of the whole test binary: it forwards to the system's and counts),
//! installs the recorder exactly as `run` and `ingest` do (`telemetry::init_metrics`),
//! records a large number of observations into every histogram runwatch has, never renders,
//! and requires the heap to come back to where it was within a few upkeep intervals. The
//! recorder is global and installs once per process, and no other test may allocate
//! meanwhile: the test runs in a process of its own (`own_process!`).

use crate::helpers::own_process::own_process;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use runwatch::telemetry::{METRICS, MetricKind, UPKEEP_INTERVAL};

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; only a counter is updated.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// One observation into every histogram, with the labels the worker uses.
fn observe_all(v: f64) {
    for (name, kind, _, _) in METRICS {
        if *kind != MetricKind::Histogram {
            continue;
        }
        if *name == "runwatch_transaction_seconds" {
            metrics::histogram!(*name, "op" => "record").record(v);
            metrics::histogram!(*name, "op" => "timers").record(v);
        } else {
            metrics::histogram!(*name).record(v);
        }
    }
}

/// Waits (recording one observation per tick, as a live worker would) until the live heap
/// is within `slack` bytes of `target`; returns the last reading.
fn settle(target: isize, slack: isize, limit: Duration) -> isize {
    let started = Instant::now();
    loop {
        observe_all(0.01);
        let now = live();
        if now - target <= slack || started.elapsed() > limit {
            return now;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn histogram_observations_do_not_accumulate_without_a_scrape() {
    own_process!(histogram_observations_do_not_accumulate_without_a_scrape);
    let _handle = runwatch::telemetry::init_metrics().expect("install the metrics recorder");
    let histograms = METRICS
        .iter()
        .filter(|m| m.1 == MetricKind::Histogram)
        .count();
    assert!(histograms >= 4, "runwatch's histograms: {histograms}");

    // Warm up: every series exists, every buffer has been drained once.
    for i in 0..10_000 {
        observe_all(f64::from(i % 100) / 100.0);
    }
    let limit = UPKEEP_INTERVAL * 6;
    std::thread::sleep(UPKEEP_INTERVAL * 2);
    let baseline = live();

    // Two rounds of 400,000 observations per histogram (at least 3.2 MB each as raw f64
    // samples); never rendered.
    const N: usize = 400_000;
    const SLACK: isize = 512 * 1024;
    for round in 0..2 {
        for i in 0..N {
            observe_all((i % 1000) as f64 / 1000.0);
        }
        let grown = live() - baseline;
        let after = settle(baseline, SLACK, limit);
        assert!(
            after - baseline <= SLACK,
            "round {round}: {N} observations per histogram grew the heap by {grown} bytes, and \
             {:.0?} later it still held {} bytes more than before (allowed: {SLACK}); \
             histogram samples are kept until a scrape",
            limit,
            after - baseline
        );
    }
}

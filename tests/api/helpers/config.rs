//! The one configuration of the tests: runwatch's defaults (`Config::load` without a file),
//! the run's NATS server, stream, subject and consumer names of its own, and short timings.
//! [`TestEnv`](super::env::TestEnv) adds a fresh database to it; tests that need NATS only
//! (their own server, no database) take it as it is.

use std::time::Duration;

use runwatch::config::Config;

use super::services;

/// The test configuration on the NATS server at `nats_url`, with its streams, subjects and
/// durable consumer named after `suffix` (from [`services::unique`]).
pub fn test_config_for(nats_url: &str, suffix: &str) -> Config {
    let mut config = Config::load(None).expect("default configuration");
    config.nats.url = nats_url.to_string();
    config.nats.connect_timeout = Duration::from_secs(2);
    services::name_uniquely(&mut config, suffix);
    // Two lanes (the default is one), so every test of the worker runs the lanes.
    config.consumer.lanes = 2;
    config.consumer.ack_wait = Duration::from_secs(10);
    config.consumer.heartbeat = Duration::from_secs(1);
    config.retry.min_delay = Duration::from_millis(50);
    config.retry.max_delay = Duration::from_millis(500);
    config.outbox.relay_interval = Duration::from_millis(200);
    config.outbox.lease = Duration::from_secs(2);
    config.timers.interval = Duration::from_millis(100);
    config.http.listen = "127.0.0.1:0".parse().expect("addr");
    config.shutdown.timeout = Duration::from_secs(10);
    config.validate().expect("test configuration is valid");
    config
}

/// [`test_config_for`] the run's NATS server (`NATS_URL`) and a fresh suffix.
pub fn test_config() -> Config {
    test_config_for(&services::nats_url(), &services::unique("n"))
}

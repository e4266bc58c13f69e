//! `[log]` and `[telemetry]`.

use serde::Deserialize;

use super::error::ConfigError;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

/// `[telemetry]`: where spans are exported (OTLP over HTTP/protobuf).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP base URL (`http://collector:4318`); spans are posted to
    /// `<otlp_endpoint>/v1/traces`. Unset: `OTEL_EXPORTER_OTLP_ENDPOINT` if that is set,
    /// else no export. An empty string turns export off whatever the environment says.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// The share of new traces sampled (exported), in [0, 1]; a trace that came with a
    /// `traceparent` keeps its sampled flag. Unset: `OTEL_TRACES_SAMPLER_ARG` when
    /// `OTEL_TRACES_SAMPLER` is `traceidratio` or `parentbased_traceidratio`, else 1.
    #[serde(default)]
    pub trace_sample_ratio: Option<f64>,
}

/// The standard OpenTelemetry variable read when `telemetry.otlp_endpoint` is not set.
pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The standard OpenTelemetry sampler variables, read when `telemetry.trace_sample_ratio`
/// is not set: a ratio sampler's argument is taken, other samplers are refused by name.
pub const OTEL_TRACES_SAMPLER: &str = "OTEL_TRACES_SAMPLER";
/// See [`OTEL_TRACES_SAMPLER`].
pub const OTEL_TRACES_SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";

/// The longest OTLP endpoint accepted.
pub const MAX_OTLP_ENDPOINT: usize = 2048;

impl TelemetryConfig {
    /// The share of new traces sampled, checked (a number in [0, 1]), the error naming the
    /// key or the variable it came from.
    pub fn sample_ratio(&self) -> Result<f64, ConfigError> {
        let (key, ratio) =
            match self.trace_sample_ratio {
                Some(r) => ("telemetry.trace_sample_ratio", r),
                None => match std::env::var(OTEL_TRACES_SAMPLER)
                    .ok()
                    .as_deref()
                    .map(str::trim)
                {
                    None | Some("") | Some("always_on") | Some("parentbased_always_on") => {
                        return Ok(1.0);
                    }
                    Some("always_off") | Some("parentbased_always_off") => return Ok(0.0),
                    Some("traceidratio") | Some("parentbased_traceidratio") => {
                        let arg = std::env::var(OTEL_TRACES_SAMPLER_ARG).unwrap_or_default();
                        let r = arg.trim().parse::<f64>().map_err(|_| ConfigError::Invalid {
                        key: OTEL_TRACES_SAMPLER_ARG.into(),
                        message: format!(
                            "`{}` is not a number: give the share of traces sampled, in [0, 1]",
                            arg.chars().take(64).collect::<String>()
                        ),
                    })?;
                        (OTEL_TRACES_SAMPLER_ARG, r)
                    }
                    Some(other) => {
                        return Err(ConfigError::Invalid {
                            key: OTEL_TRACES_SAMPLER.into(),
                            message: format!(
                                "`{}` is not supported: runwatch samples by trace-id ratio \
                             (always_on, always_off, traceidratio and their parentbased_ forms)",
                                other.chars().take(64).collect::<String>()
                            ),
                        });
                    }
                },
            };
        if !ratio.is_finite() || !(0.0..=1.0).contains(&ratio) {
            return Err(ConfigError::Invalid {
                key: key.into(),
                message: format!("{ratio} is not in [0, 1]"),
            });
        }
        Ok(ratio)
    }

    /// The endpoint spans are exported to, `None` when export is off: checked (an http or
    /// https URL with a host, no credentials, query or fragment, at most
    /// [`MAX_OTLP_ENDPOINT`] bytes), the error naming the key or the variable it came from.
    pub fn endpoint(&self) -> Result<Option<url::Url>, ConfigError> {
        let (key, value) = match &self.otlp_endpoint {
            Some(v) => ("telemetry.otlp_endpoint", v.clone()),
            None => match std::env::var(OTEL_EXPORTER_OTLP_ENDPOINT) {
                Ok(v) => (OTEL_EXPORTER_OTLP_ENDPOINT, v),
                Err(_) => return Ok(None),
            },
        };
        let value = value.trim();
        if value.is_empty() {
            return Ok(None);
        }
        let invalid = |message: String| ConfigError::Invalid {
            key: key.into(),
            message,
        };
        if value.len() > MAX_OTLP_ENDPOINT {
            return Err(invalid(format!("longer than {MAX_OTLP_ENDPOINT} bytes")));
        }
        let url = url::Url::parse(value).map_err(|e| {
            invalid(format!(
                "not a URL ({e}): give the collector's OTLP/HTTP base URL, e.g. http://collector:4318"
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(format!(
                "scheme `{}` is not http or https",
                url.scheme()
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("has no host".into()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "must not carry credentials (they would be logged)".into(),
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("must not have a query or a fragment".into()));
        }
        Ok(Some(url))
    }
}

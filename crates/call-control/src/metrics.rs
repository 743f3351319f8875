//! Prometheus metrics of the service, rendered as text exposition format 0.0.4 at `GET /metrics`.
//!
//! Counters that only this process sees (HTTP requests, webhook delivery attempts) live in
//! [`Metrics`]; values that must agree across restarts and nodes (calls by status, the webhook
//! outbox) are read from the store when the page is rendered and passed in as a [`Snapshot`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;

/// Upper bounds (seconds) of the HTTP request duration histogram buckets.
const DURATION_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Process-wide metric registry; share it as `Arc<Metrics>`.
#[derive(Debug, Default)]
pub struct Metrics {
    http_requests: DashMap<(String, String, u16), AtomicU64>,
    http_durations: DashMap<String, Histogram>,
    webhook_deliveries: DashMap<String, AtomicU64>,
    calls_created: DashMap<String, AtomicU64>,
}

/// Values read from the store and the engine at scrape time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Number of call records per status (`queued`, `in_progress`, `ended`, ...).
    pub calls_by_status: BTreeMap<String, u64>,
    /// Calls currently held by the engine.
    pub live_calls: u64,
    /// Inbound calls the engine admitted since it started (the API counts outbound ones).
    pub inbound_calls_created: u64,
    /// Webhook outbox rows per state (`pending`, `delivered`, `dead`).
    pub webhook_outbox: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; DURATION_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Counts one HTTP request: `route` is the matched route template (bounded cardinality),
    /// never the raw path.
    ///
    /// `method` is whatever the client sent: anything but the standard methods is counted as
    /// `other`, so that no client can grow the label set (and `/metrics`) without bound.
    /// `route` must be a matched route template or `unmatched`, never a raw path.
    pub fn record_http(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        increment(
            &self.http_requests,
            (method_label(method).to_owned(), route.to_owned(), status),
        );
        let histogram = self.http_durations.entry(route.to_owned()).or_default();
        let seconds = elapsed.as_secs_f64();
        for (bucket, bound) in histogram.buckets.iter().zip(DURATION_BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        histogram.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        histogram.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Counts one webhook delivery attempt by its result (`delivered`, `failed`, `dead`).
    pub fn record_webhook_delivery(&self, result: &str) {
        increment(&self.webhook_deliveries, result.to_owned());
    }

    /// Counts one call created through the API or accepted inbound, by direction.
    pub fn record_call_created(&self, direction: &str) {
        increment(&self.calls_created, direction.to_owned());
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let mut out = String::with_capacity(4096);
        header(
            &mut out,
            "dialcore_calls",
            "gauge",
            "Call records by status.",
        );
        for (status, count) in &snapshot.calls_by_status {
            line(&mut out, "dialcore_calls", &[("status", status)], *count);
        }
        header(
            &mut out,
            "dialcore_live_calls",
            "gauge",
            "Calls currently live in the engine.",
        );
        line(&mut out, "dialcore_live_calls", &[], snapshot.live_calls);

        header(
            &mut out,
            "dialcore_calls_created_total",
            "counter",
            "Calls created since the process started, by direction.",
        );
        let mut created = sorted(&self.calls_created);
        if snapshot.inbound_calls_created > 0 {
            match created
                .iter_mut()
                .find(|(direction, _)| direction == "inbound")
            {
                Some((_, count)) => *count += snapshot.inbound_calls_created,
                None => created.push(("inbound".to_owned(), snapshot.inbound_calls_created)),
            }
            created.sort();
        }
        for (direction, count) in created {
            line(
                &mut out,
                "dialcore_calls_created_total",
                &[("direction", &direction)],
                count,
            );
        }

        header(
            &mut out,
            "dialcore_http_requests_total",
            "counter",
            "HTTP requests by method, route and status code.",
        );
        for ((method, route, status), count) in sorted(&self.http_requests) {
            let status = status.to_string();
            line(
                &mut out,
                "dialcore_http_requests_total",
                &[("method", &method), ("route", &route), ("code", &status)],
                count,
            );
        }
        self.render_durations(&mut out);

        header(
            &mut out,
            "dialcore_webhook_deliveries_total",
            "counter",
            "Webhook delivery attempts since the process started, by result.",
        );
        for (result, count) in sorted(&self.webhook_deliveries) {
            line(
                &mut out,
                "dialcore_webhook_deliveries_total",
                &[("result", &result)],
                count,
            );
        }
        header(
            &mut out,
            "dialcore_webhook_outbox",
            "gauge",
            "Webhook deliveries in the persisted outbox, by state.",
        );
        for (state, count) in &snapshot.webhook_outbox {
            line(
                &mut out,
                "dialcore_webhook_outbox",
                &[("state", state)],
                *count,
            );
        }
        out
    }

    fn render_durations(&self, out: &mut String) {
        const NAME: &str = "dialcore_http_request_duration_seconds";
        header(out, NAME, "histogram", "HTTP request latency by route.");
        let mut routes: Vec<String> = self
            .http_durations
            .iter()
            .map(|e| e.key().clone())
            .collect();
        routes.sort();
        for route in routes {
            let Some(histogram) = self.http_durations.get(&route) else {
                continue;
            };
            for (bucket, bound) in histogram.buckets.iter().zip(DURATION_BUCKETS) {
                let le = bound.to_string();
                let count = bucket.load(Ordering::Relaxed);
                line(
                    out,
                    &format!("{NAME}_bucket"),
                    &[("route", &route), ("le", &le)],
                    count,
                );
            }
            let count = histogram.count.load(Ordering::Relaxed);
            line(
                out,
                &format!("{NAME}_bucket"),
                &[("route", &route), ("le", "+Inf")],
                count,
            );
            let sum = histogram.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "{NAME}_sum{{route=\"{}\"}} {sum}", escape(&route));
            line(out, &format!("{NAME}_count"), &[("route", &route)], count);
        }
    }
}

fn increment<K: std::hash::Hash + Eq>(map: &DashMap<K, AtomicU64>, key: K) {
    map.entry(key)
        .or_insert_with(|| AtomicU64::new(0))
        .fetch_add(1, Ordering::Relaxed);
}

fn sorted<K: Clone + Ord + std::hash::Hash + Eq>(map: &DashMap<K, AtomicU64>) -> Vec<(K, u64)> {
    let mut rows: Vec<(K, u64)> = map
        .iter()
        .map(|entry| (entry.key().clone(), entry.value().load(Ordering::Relaxed)))
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn line(out: &mut String, name: &str, labels: &[(&str, &str)], value: u64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (key, val)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{key}=\"{}\"", escape(val));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Escapes a label value: backslash, double quote and newline (exposition format rules).
fn escape(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// The `method` label of an HTTP request: one of the RFC 9110 methods and PATCH, else `other`.
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    KNOWN
        .into_iter()
        .find(|known| *known == method)
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let metrics = Metrics::new();
        metrics.record_http("GET", "/api/public/v1/calls", 200, Duration::from_millis(3));
        metrics.record_http(
            "GET",
            "/api/public/v1/calls",
            200,
            Duration::from_millis(30),
        );
        metrics.record_http(
            "POST",
            "/api/public/v1/calls",
            422,
            Duration::from_millis(1),
        );
        metrics.record_webhook_delivery("delivered");
        metrics.record_call_created("outbound");
        let mut snapshot = Snapshot {
            live_calls: 2,
            inbound_calls_created: 3,
            ..Snapshot::default()
        };
        snapshot.calls_by_status.insert("ended".into(), 5);
        snapshot.webhook_outbox.insert("pending".into(), 1);
        let text = metrics.render(&snapshot);
        assert!(text.contains("dialcore_calls{status=\"ended\"} 5\n"));
        assert!(text.contains("dialcore_live_calls 2\n"));
        assert!(text.contains(
            "dialcore_http_requests_total{method=\"GET\",route=\"/api/public/v1/calls\",code=\"200\"} 2\n"
        ));
        assert!(text.contains("code=\"422\"} 1\n"));
        assert!(text.contains(
            "dialcore_http_request_duration_seconds_bucket{route=\"/api/public/v1/calls\",le=\"0.005\"} 2\n"
        ));
        assert!(text.contains(
            "dialcore_http_request_duration_seconds_bucket{route=\"/api/public/v1/calls\",le=\"0.025\"} 2\n"
        ));
        assert!(text.contains(
            "dialcore_http_request_duration_seconds_bucket{route=\"/api/public/v1/calls\",le=\"0.05\"} 3\n"
        ));
        assert!(text.contains("dialcore_webhook_deliveries_total{result=\"delivered\"} 1\n"));
        assert!(text.contains("dialcore_webhook_outbox{state=\"pending\"} 1\n"));
        assert!(text.contains("dialcore_calls_created_total{direction=\"outbound\"} 1\n"));
        assert!(
            text.contains("dialcore_calls_created_total{direction=\"inbound\"} 3\n"),
            "inbound calls, counted by the engine: {text}"
        );
    }

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}

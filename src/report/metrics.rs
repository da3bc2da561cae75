//! Prometheus metrics: what an operator graphs and alerts on. Counters and histograms are fed
//! by the reports (`observe`, called by `Reporters` once a report is written), so a metric never
//! says something the reports file does not; gauges (state, queue, outbox, maintenance) are read
//! from the services' views when scraped (`render`). Served at `GET /metrics` on the control
//! socket and, with `[daemon] metrics_listen`, on a TCP address.
//!
//! Names follow Prometheus conventions: `hotswap_` prefix, base units (seconds), `_total` for
//! counters, labels for service, result, phase and verdict. Counters start at zero with the
//! daemon, as Prometheus expects of a process's counters.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use super::Report;
use crate::model::State;

/// Phase and swap durations run from milliseconds (a switch) to minutes (a drain).
const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0, 600.0,
];

const STATES: [State; 6] = [
    State::Recovering,
    State::Serving,
    State::Swapping,
    State::Repairing,
    State::Degraded,
    State::Down,
];

pub struct Metrics {
    registry: Registry,
    swaps: IntCounterVec,
    swap_seconds: HistogramVec,
    phase_seconds: HistogramVec,
    swap_failed_requests: IntCounterVec,
    drained_streams: IntCounterVec,
    repairs: IntCounterVec,
    canary_steps: IntCounterVec,
    canary_error_ratio: GaugeVec,
    canary_response_seconds: GaugeVec,
    last_success: GaugeVec,
    state: IntGaugeVec,
    queued: IntGaugeVec,
    maintenance: IntGaugeVec,
    outbox_reports: IntGauge,
    outbox_oldest_age: prometheus::Gauge,
}

/// What the gauges read of one service when scraped.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceGauges {
    pub service: String,
    pub state: State,
    pub queued: usize,
    pub maintenance: bool,
}

/// What the outbox holds when scraped: reports not yet accepted by SQS.
#[derive(Debug, Clone, Copy, Default)]
pub struct OutboxDepth {
    pub reports: u64,
    pub oldest_age_secs: f64,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("registered once");
    c
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(DURATION_BUCKETS.to_vec()),
        labels,
    )
    .expect("valid metric");
    r.register(Box::new(h.clone())).expect("registered once");
    h
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("registered once");
    g
}

fn int_gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("registered once");
    g
}

/// `hotswap_build_info{version}`: always 1.
fn build_info(r: &Registry) {
    let build = int_gauge(
        r,
        "hotswap_build_info",
        "hotswapd's version; always 1 (join on it for the version)",
        &["version"],
    );
    build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
}

/// What the outbox holds: how many reports, and how old the oldest.
fn outbox_gauges(r: &Registry) -> (IntGauge, prometheus::Gauge) {
    let reports = IntGauge::new(
        "hotswap_outbox_reports",
        "Reports written but not yet accepted by SQS",
    )
    .expect("valid metric");
    r.register(Box::new(reports.clone()))
        .expect("registered once");
    let oldest = prometheus::Gauge::new(
        "hotswap_outbox_oldest_age_seconds",
        "Age of the oldest report waiting for SQS (0 when none waits)",
    )
    .expect("valid metric");
    r.register(Box::new(oldest.clone()))
        .expect("registered once");
    (reports, oldest)
}

/// The last canary step's error ratio and response time, per release.
fn canary_gauges(r: &Registry) -> (GaugeVec, GaugeVec) {
    (
        gauge(
            r,
            "hotswap_canary_last_step_error_ratio",
            "Share of failed requests in the last canary step, for the new and the old release",
            &["service", "release"],
        ),
        gauge(
            r,
            "hotswap_canary_last_step_response_time_seconds",
            "HAProxy's average response time in the last canary step, for the new and the old release",
            &["service", "release"],
        ),
    )
}

/// Read from each service when scraped: its state, its queue, its maintenance mode.
fn service_gauges(r: &Registry) -> (IntGaugeVec, IntGaugeVec, IntGaugeVec) {
    (
        int_gauge(
            r,
            "hotswap_service_state",
            "1 for the state the service is in, 0 for the others",
            &["service", "state"],
        ),
        int_gauge(
            r,
            "hotswap_queued_releases",
            "Releases waiting for the service's swap in flight",
            &["service"],
        ),
        int_gauge(
            r,
            "hotswap_maintenance",
            "1 while the service is in maintenance mode (HAProxy answers its clients 503)",
            &["service"],
        ),
    )
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        build_info(&r);
        let (outbox_reports, outbox_oldest_age) = outbox_gauges(&r);
        let (canary_error_ratio, canary_response_seconds) = canary_gauges(&r);
        let (state, queued, maintenance) = service_gauges(&r);
        Metrics {
            swaps: counter(
                &r,
                "hotswap_swaps_total",
                "Swaps finished, by service and result (success, failure)",
                &["service", "result"],
            ),
            swap_seconds: histogram(
                &r,
                "hotswap_swap_duration_seconds",
                "From a release accepted to its swap's end",
                &["service", "result"],
            ),
            phase_seconds: histogram(
                &r,
                "hotswap_swap_phase_duration_seconds",
                "Time spent in each phase of a swap",
                &["service", "phase"],
            ),
            swap_failed_requests: counter(
                &r,
                "hotswap_swap_failed_requests_total",
                "Requests HAProxy counted as failed on the service's backend during swaps",
                &["service"],
            ),
            drained_streams: counter(
                &r,
                "hotswap_drained_streams_total",
                "Long-lived streams on releases being replaced, by how they ended: by themselves (the app or the client) or closed by hotswapd after the stream budget",
                &["service", "end"],
            ),
            repairs: counter(
                &r,
                "hotswap_repairs_total",
                "Dead or unhealthy parts of the current release replaced between swaps, by result",
                &["service", "result"],
            ),
            canary_steps: counter(
                &r,
                "hotswap_canary_steps_total",
                "Canary steps and watch windows judged, by verdict (passed, too_few_requests, aborted)",
                &["service", "verdict"],
            ),
            last_success: gauge(
                &r,
                "hotswap_last_success_timestamp_seconds",
                "When the service's last successful swap ended (unix time)",
                &["service"],
            ),
            canary_error_ratio,
            canary_response_seconds,
            state,
            queued,
            maintenance,
            outbox_reports,
            outbox_oldest_age,
            registry: r,
        }
    }

    /// Counts a report that was written.
    pub fn observe(&self, report: &Report) {
        let service = report.service.as_str();
        let secs = |ms: u64| ms as f64 / 1000.0;
        if report.kind == crate::model::ReportKind::Repair {
            self.repairs
                .with_label_values(&[service, report.result.as_str()])
                .inc();
            return;
        }
        self.swaps
            .with_label_values(&[service, report.result.as_str()])
            .inc();
        self.swap_seconds
            .with_label_values(&[service, report.result.as_str()])
            .observe(secs(report.finished_ms.saturating_sub(report.accepted_ms)));
        for p in &report.phases {
            self.phase_seconds
                .with_label_values(&[service, &p.phase])
                .observe(secs(p.took_ms));
        }
        if let Some(n) = report.failed_requests {
            self.swap_failed_requests
                .with_label_values(&[service])
                .inc_by(n);
        }
        if let Some(c) = report.streams {
            for (end, n) in [("ended", c.ended), ("closed", c.closed)] {
                self.drained_streams
                    .with_label_values(&[service, end])
                    .inc_by(n);
            }
        }
        if report.result == crate::model::Outcome::Success {
            self.last_success
                .with_label_values(&[service])
                .set(secs(report.finished_ms));
        }
        for step in report.canary.iter().flat_map(|c| &c.steps) {
            self.canary_steps
                .with_label_values(&[service, verdict(&step.verdict)])
                .inc();
            for (release, f) in [("new", &step.new), ("old", &step.old)] {
                let ratio = if f.requests == 0 {
                    0.0
                } else {
                    f.errors as f64 / f.requests as f64
                };
                self.canary_error_ratio
                    .with_label_values(&[service, release])
                    .set(ratio);
                self.canary_response_seconds
                    .with_label_values(&[service, release])
                    .set(secs(f.rtime_ms));
            }
        }
    }

    /// The text exposition (format 0.0.4), gauges read from `services` and `outbox` now.
    pub fn render(&self, services: &[ServiceGauges], outbox: Option<OutboxDepth>) -> String {
        for v in services {
            for s in STATES {
                self.state
                    .with_label_values(&[&v.service, s.name()])
                    .set(i64::from(v.state == s));
            }
            self.queued
                .with_label_values(&[&v.service])
                .set(v.queued as i64);
            self.maintenance
                .with_label_values(&[&v.service])
                .set(i64::from(v.maintenance));
        }
        let outbox = outbox.unwrap_or_default();
        self.outbox_reports.set(outbox.reports as i64);
        self.outbox_oldest_age.set(outbox.oldest_age_secs);
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("metrics encode");
        String::from_utf8(out).expect("metrics are UTF-8")
    }

    /// A service removed by a config reload leaves the gauges.
    pub fn forget(&self, service: &str) {
        for s in STATES {
            let _ = self.state.remove_label_values(&[service, s.name()]);
        }
        let _ = self.queued.remove_label_values(&[service]);
        let _ = self.maintenance.remove_label_values(&[service]);
    }
}

/// A step's verdict as a label: its reason text would make a label per figure.
fn verdict(text: &str) -> &'static str {
    match text {
        t if t.starts_with("passed: too few") => "too_few_requests",
        t if t.starts_with("passed") => "passed",
        _ => "aborted",
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;

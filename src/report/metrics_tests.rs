//! What the metrics count from reports, and the text a scrape reads.

use super::*;
use crate::model::{Figures, StepRecord};
use crate::report::CanaryReport;

fn report(kind: &str, result: &str) -> Report {
    let kind = serde_json::from_value(kind.into()).unwrap();
    let result = serde_json::from_value(result.into()).unwrap();
    Report {
        schema: 1,
        kind,
        report_id: "d1".into(),
        instance_id: "i-1".into(),
        stack: None,
        service: "web".into(),
        image: "web:2".into(),
        version: "2".into(),
        deploy_id: "d1".into(),
        result,
        phase_reached: "retiring".into(),
        reason: None,
        cause: None,
        warnings: vec![],
        accepted_ms: 1_000,
        time_to_traffic_ms: None,
        finished_ms: 1_450,
        phases: vec![super::super::PhaseTiming {
            phase: "starting".into(),
            started_ms: 1_000,
            took_ms: 300,
        }],
        health_response: None,
        previous_image: None,
        failed_requests: Some(2),
        images_reclaimed_bytes: None,
        streams: Some(crate::model::StreamCounts {
            open: 5,
            ended: 1,
            closed: 4,
        }),
        signalled_ms: None,
        canary: None,
        repair: None,
        hooks: vec![],
        requested_by: None,
        superseded_by: None,
    }
}

#[test]
fn reports_become_counters_and_histograms() {
    let m = Metrics::new();
    m.observe(&report("swap", "success"));
    m.observe(&report("swap", "failure"));
    m.observe(&report("repair", "success"));
    let mut canary = report("swap", "failure");
    let figures = |requests, errors| Figures {
        requests,
        errors,
        rtime_ms: 12,
    };
    canary.canary = Some(CanaryReport {
        skipped: false,
        planned: vec![],
        watch_ms: 0,
        steps: vec![StepRecord {
            kind: "ramp".into(),
            share_pct: 10,
            started_ms: 0,
            ended_ms: 1,
            new: figures(100, 25),
            old: figures(900, 0),
            verdict: "aborted: error rate 25.00 % over 5.00 %".into(),
        }],
    });
    m.observe(&canary);
    let view = ServiceGauges {
        service: "web".into(),
        state: State::Serving,
        queued: 0,
        maintenance: false,
    };
    let text = m.render(
        &[view],
        Some(OutboxDepth {
            reports: 3,
            oldest_age_secs: 4.5,
        }),
    );
    for line in [
        "hotswap_swaps_total{result=\"success\",service=\"web\"} 1",
        "hotswap_swaps_total{result=\"failure\",service=\"web\"} 2",
        "hotswap_repairs_total{result=\"success\",service=\"web\"} 1",
        "hotswap_swap_failed_requests_total{service=\"web\"} 6",
        "hotswap_drained_streams_total{end=\"closed\",service=\"web\"} 12",
        "hotswap_drained_streams_total{end=\"ended\",service=\"web\"} 3",
        "hotswap_swap_phase_duration_seconds_count{phase=\"starting\",service=\"web\"} 3",
        "hotswap_swap_duration_seconds_bucket{result=\"success\",service=\"web\",le=\"0.5\"} 1",
        "hotswap_canary_steps_total{service=\"web\",verdict=\"aborted\"} 1",
        "hotswap_canary_last_step_error_ratio{release=\"new\",service=\"web\"} 0.25",
        "hotswap_last_success_timestamp_seconds{service=\"web\"} 1.45",
        "hotswap_service_state{service=\"web\",state=\"serving\"} 1",
        "hotswap_service_state{service=\"web\",state=\"down\"} 0",
        "hotswap_queued_releases{service=\"web\"} 0",
        "hotswap_outbox_reports 3",
        "hotswap_outbox_oldest_age_seconds 4.5",
        "hotswap_build_info{version=\"",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
}

//! `[services.NAME.ramp]` as written, validated into the canary's plan and limits.

use std::time::Duration;

use super::*;

impl Ramp {
    pub(super) fn validate(self, ctx: &Ctx, key: &str) -> Result<RampSettings, ConfigError> {
        let secs = |k: &str, v: f64| -> Result<Duration, ConfigError> {
            if v.is_finite() && (0.0..=86_400.0).contains(&v) {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(ctx.invalid(
                    format!("{key}.{k}"),
                    format!("{v}: expected 0 to 86400 seconds"),
                ))
            }
        };
        let hold = secs("hold_secs", self.hold_secs)?;
        let watch = secs("watch_secs", self.watch_secs.unwrap_or(0.0))?;
        let steps = ramp_steps(ctx, key, &self.steps, hold)?;
        let d = CanaryLimits::default();
        let pct = |k: &str, v: Option<f64>, default: f64| -> Result<f64, ConfigError> {
            match v {
                None => Ok(default),
                Some(v) if v.is_finite() && (0.0..=100.0).contains(&v) => Ok(v),
                Some(v) => Err(ctx.invalid(
                    format!("{key}.{k}"),
                    format!("{v}: expected a percentage from 0 to 100"),
                )),
            }
        };
        let factor = match self.max_latency_factor {
            None => d.max_latency_factor,
            Some(f) if f.is_finite() && f >= 1.0 => f,
            Some(f) => {
                return Err(ctx.invalid(
                    format!("{key}.max_latency_factor"),
                    format!("{f}: expected 1.0 or more"),
                ))
            }
        };
        Ok(RampSettings {
            steps,
            watch,
            check_interval: positive_ms(
                ctx,
                format!("{key}.check_interval_ms"),
                self.check_interval_ms,
                250,
            )?,
            limits: CanaryLimits {
                max_error_pct: pct("max_error_pct", self.max_error_pct, d.max_error_pct)?,
                error_margin_pct: pct(
                    "error_margin_pct",
                    self.error_margin_pct,
                    d.error_margin_pct,
                )?,
                max_latency_factor: factor,
                latency_floor_ms: self.latency_floor_ms.unwrap_or(d.latency_floor_ms),
                min_requests: self.min_requests.unwrap_or(d.min_requests),
            },
        })
    }
}

/// `steps`: shares rising from 1 to 100, each held `hold`.
fn ramp_steps(
    ctx: &Ctx,
    key: &str,
    shares: &[u64],
    hold: Duration,
) -> Result<Vec<RampStep>, ConfigError> {
    if shares.is_empty() {
        return Err(ctx.invalid(
            format!("{key}.steps"),
            "give at least one share, e.g. [5, 25, 50, 100]",
        ));
    }
    let mut steps = Vec::new();
    let mut last = 0;
    for (i, &p) in shares.iter().enumerate() {
        if p == 0 || p > 100 || p <= last {
            return Err(ctx.invalid(
                format!("{key}.steps[{i}]"),
                format!("{p}: shares are percentages from 1 to 100, each above the one before"),
            ));
        }
        last = p;
        steps.push(RampStep {
            share_pct: p as u8,
            hold_ms: hold.as_millis() as u64,
        });
    }
    if last != 100 {
        return Err(ctx.invalid(
            format!("{key}.steps"),
            format!(
                "the last share is {last}: a ramp ends with 100 (all traffic to the new release)"
            ),
        ));
    }
    Ok(steps)
}

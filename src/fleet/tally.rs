//! Counting host reports on the build box: one success per instance, the first failure ends it,
//! other deploys and repeats are ignored. Pure: the SQS polling feeds message bodies in.

use std::collections::BTreeMap;

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Waiting,
    AllSucceeded,
    Failed {
        instance: String,
        service: String,
        reason: String,
    },
}

#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub deploy_id: String,
    pub expected: usize,
    /// instance → services that reported success.
    pub succeeded: BTreeMap<String, Vec<String>>,
    pub failure: Option<(String, String, String)>,
    pub other_deploys: usize,
    pub repeats: usize,
    pub unreadable: usize,
}

impl Tally {
    pub fn new(deploy_id: &str, expected: usize) -> Tally {
        Tally {
            deploy_id: deploy_id.to_string(),
            expected,
            ..Default::default()
        }
    }

    /// A host's per-service deploy id is `<stack deploy id>-<service>` (see `deploy --from-metadata`).
    fn ours(&self, id: &str) -> bool {
        id == self.deploy_id
            || id
                .strip_prefix(&self.deploy_id)
                .is_some_and(|rest| rest.starts_with('-'))
    }

    pub fn absorb(&mut self, body: &str) -> Outcome {
        let Ok(v) = serde_json::from_str::<Value>(body) else {
            self.unreadable += 1;
            return self.outcome();
        };
        let text = |k: &str| v[k].as_str().unwrap_or("").to_string();
        // a repair between swaps says nothing of how a deploy went
        if !self.ours(&text("deploy_id")) || v["kind"] == "repair" {
            self.other_deploys += 1;
            return self.outcome();
        }
        let (instance, service) = (text("instance_id"), text("service"));
        match v["result"].as_str() {
            Some("success") => {
                let services = self.succeeded.entry(instance).or_default();
                if services.contains(&service) {
                    self.repeats += 1;
                } else {
                    services.push(service);
                }
            }
            // superseded on a host by a later deploy: this one will not succeed there
            Some("failure" | "superseded") if self.failure.is_none() => {
                let reason = v["reason"]
                    .as_str()
                    .unwrap_or("no reason given")
                    .to_string();
                self.failure = Some((instance, service, reason));
            }
            Some("failure" | "superseded") => self.repeats += 1,
            _ => self.unreadable += 1,
        }
        self.outcome()
    }

    pub fn outcome(&self) -> Outcome {
        if let Some((instance, service, reason)) = &self.failure {
            return Outcome::Failed {
                instance: instance.clone(),
                service: service.clone(),
                reason: reason.clone(),
            };
        }
        if self.succeeded.len() >= self.expected {
            Outcome::AllSucceeded
        } else {
            Outcome::Waiting
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(deploy: &str, instance: &str, result: &str) -> String {
        serde_json::json!({"deploy_id": deploy, "instance_id": instance, "service": "web", "result": result, "reason": "health gate failed"}).to_string()
    }

    #[test]
    fn counts_one_success_per_instance_ignoring_others_and_repeats() {
        let mut t = Tally::new("sd-1", 2);
        assert_eq!(
            t.absorb(&msg("sd-0-web", "i-a", "success")),
            Outcome::Waiting
        );
        assert_eq!(
            t.absorb(&msg("sd-1-web", "i-a", "success")),
            Outcome::Waiting
        );
        assert_eq!(
            t.absorb(&msg("sd-1-web", "i-a", "success")),
            Outcome::Waiting
        );
        assert_eq!(t.absorb("garbage"), Outcome::Waiting);
        assert_eq!(
            t.absorb(&msg("sd-10-web", "i-b", "success")),
            Outcome::Waiting,
            "sd-10 is another deploy"
        );
        assert_eq!(
            t.absorb(&msg("sd-1", "i-b", "success")),
            Outcome::AllSucceeded
        );
        assert_eq!((t.other_deploys, t.repeats, t.unreadable), (2, 1, 1));
    }

    #[test]
    fn the_first_failure_ends_it_with_instance_and_reason() {
        let mut t = Tally::new("sd-1", 3);
        t.absorb(&msg("sd-1-web", "i-a", "success"));
        let o = t.absorb(&msg("sd-1-web", "i-b", "failure"));
        assert_eq!(
            o,
            Outcome::Failed {
                instance: "i-b".into(),
                service: "web".into(),
                reason: "health gate failed".into()
            }
        );
    }
}

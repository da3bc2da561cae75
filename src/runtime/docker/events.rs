//! Docker's event stream for our containers: what wakes supervision (`crate::watchers`).

use std::collections::HashMap;

use futures_util::StreamExt;

use super::errors::chain;
use super::Docker;

impl Docker {
    /// The life events (start, die, OOM, kill, health status) of the containers labelled
    /// `hotswap.instance=<instance>`, as (service label, action, container id). The stream ends when Docker
    /// goes away; the caller subscribes again.
    pub fn container_events(
        &self,
        instance: &str,
    ) -> impl futures_util::Stream<Item = Result<(String, String, String), String>> + use<> {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            (
                "label".to_string(),
                vec![format!("{}={instance}", crate::runtime::LABEL_INSTANCE)],
            ),
            (
                "event".to_string(),
                ["start", "die", "oom", "kill", "health_status", "destroy"]
                    .map(String::from)
                    .to_vec(),
            ),
        ]);
        let options = bollard::query_parameters::EventsOptions {
            filters: Some(filters),
            ..Default::default()
        };
        let endpoint = self.endpoint.clone();
        self.client.events(Some(options)).map(move |e| match e {
            Ok(m) => {
                let actor = m.actor.unwrap_or_default();
                let service = actor
                    .attributes
                    .and_then(|mut a| a.remove(crate::runtime::LABEL_SERVICE))
                    .unwrap_or_default();
                Ok((
                    service,
                    m.action.unwrap_or_default(),
                    actor.id.unwrap_or_default(),
                ))
            }
            Err(e) => Err(format!("Docker at {endpoint}: {}", chain(&e))),
        })
    }
}

//! `lint-template`: the lessons of CloudFormation blue-green with AutoScalingRollingUpdate
//! (seed 001) as warnings, each with the template path it is about.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::cfn::template::{Size, Template};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// Where in the template, e.g. `Resources.AppGroup.Properties.DesiredCapacity`.
    pub path: String,
    pub message: String,
}

pub fn lint(t: &Template) -> Vec<Warning> {
    let mut out = Vec::new();
    for group in t.groups() {
        let props = format!("Resources.{group}.Properties");
        let rolling = t.rolling_update(&group);
        if let Size::Literal(n) = t.size(&group, "DesiredCapacity") {
            out.push(Warning {
                path: format!("{props}.DesiredCapacity"),
                message: format!(
                    "DesiredCapacity is hard-coded ({n}): an update under hot swap or rolling update resets the group to it and undoes scaling; bind it to a parameter set from the live value"
                ),
            });
        }
        if let Some(ru) = rolling {
            let path = format!("Resources.{group}.UpdatePolicy.AutoScalingRollingUpdate");
            let max_size = t.resolve(&t.size(&group, "MaxSize"), &BTreeMap::new()).ok();
            let batch = match ru.get("MaxBatchSize") {
                Some(Value::Number(n)) => n.as_i64(),
                Some(Value::String(s)) => s.parse().ok(),
                _ => None,
            };
            if batch.is_none() || batch != max_size {
                out.push(Warning {
                    path: format!("{path}.MaxBatchSize"),
                    message: format!(
                        "MaxBatchSize ({}) is not MaxSize ({}): a one-batch blue-green replaces every instance at once only when they are equal",
                        batch.map(|b| b.to_string()).unwrap_or_else(|| "unset".into()),
                        max_size.map(|m| m.to_string()).unwrap_or_else(|| "unresolved".into())
                    ),
                });
            }
            match ru.get("MinInstancesInService") {
                Some(Value::Object(o)) if o.contains_key("Ref") => {}
                other => out.push(Warning {
                    path: format!("{path}.MinInstancesInService"),
                    message: format!(
                        "MinInstancesInService is {}: bind it to a parameter set to the live DesiredCapacity (hotswapctl stack-update does that), or capacity drops during the update",
                        other.map(|v| v.to_string()).unwrap_or_else(|| "unset".into())
                    ),
                }),
            }
        }
        let policies: Vec<String> = t.body["Resources"][&group]["Properties"]
            ["TerminationPolicies"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if policies.len() < 2
            || policies[0] != "OldestLaunchConfiguration"
            || policies[1] != "OldestInstance"
        {
            out.push(Warning {
                path: format!("{props}.TerminationPolicies"),
                message: format!(
                    "TerminationPolicies is {policies:?}: use [OldestLaunchConfiguration, OldestInstance] so scale-in removes the old release's instances first"
                ),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_following_the_lessons_is_clean() {
        let good = r#"
Parameters: {DesiredCapacity: {Type: Number, Default: 2}, MinInstancesInService: {Type: Number, Default: 2}}
Resources:
  G:
    Type: AWS::AutoScaling::AutoScalingGroup
    UpdatePolicy: {AutoScalingRollingUpdate: {MaxBatchSize: 10, MinInstancesInService: !Ref MinInstancesInService}}
    Properties: {MinSize: 1, MaxSize: 10, DesiredCapacity: !Ref DesiredCapacity, TerminationPolicies: [OldestLaunchConfiguration, OldestInstance]}
"#;
        assert_eq!(lint(&Template::parse(good).unwrap()), vec![]);
    }

    #[test]
    fn each_lesson_is_a_warning_with_its_path() {
        let bad = r#"
Resources:
  G:
    Type: AWS::AutoScaling::AutoScalingGroup
    UpdatePolicy: {AutoScalingRollingUpdate: {MaxBatchSize: 2, MinInstancesInService: 1}}
    Properties: {MinSize: 1, MaxSize: 10, DesiredCapacity: 3, TerminationPolicies: [OldestInstance]}
"#;
        let w = lint(&Template::parse(bad).unwrap());
        let paths: Vec<&str> = w.iter().map(|w| w.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "Resources.G.Properties.DesiredCapacity",
                "Resources.G.UpdatePolicy.AutoScalingRollingUpdate.MaxBatchSize",
                "Resources.G.UpdatePolicy.AutoScalingRollingUpdate.MinInstancesInService",
                "Resources.G.Properties.TerminationPolicies",
            ]
        );
        assert!(
            w[1].message.contains("(2) is not MaxSize (10)"),
            "{}",
            w[1].message
        );
    }
}

//! porter's hot swap safety rules, as pure functions: the stack is settled, young enough, and its
//! group's live capacity fits the template; then what the update must carry to keep scaling.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::cfn::template::{Size, Template};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("stack {stack} is {status}: hot swap needs a settled stack (*_COMPLETE)")]
    NotSettled { stack: String, status: String },
    #[error("stack {stack} is {age_days:.1} days old, older than the {max_days:.1}-day limit: re-provision it instead of hot swapping")]
    TooOld {
        stack: String,
        age_days: f64,
        max_days: f64,
    },
    #[error("group {group}: live DesiredCapacity {desired} is outside the template's MinSize {min} .. MaxSize {max}")]
    CapacityOutOfRange {
        group: String,
        min: i64,
        desired: i64,
        max: i64,
    },
    #[error("template: {0}")]
    Template(String),
}

pub fn check_status(stack: &str, status: &str) -> Result<(), Refusal> {
    let settled =
        status.ends_with("_COMPLETE") && !matches!(status, "DELETE_COMPLETE" | "ROLLBACK_COMPLETE");
    if settled {
        Ok(())
    } else {
        Err(Refusal::NotSettled {
            stack: stack.into(),
            status: status.into(),
        })
    }
}

pub fn check_age(stack: &str, age: Duration, max: Duration) -> Result<(), Refusal> {
    if age <= max {
        Ok(())
    } else {
        Err(Refusal::TooOld {
            stack: stack.into(),
            age_days: age.as_secs_f64() / 86_400.0,
            max_days: max.as_secs_f64() / 86_400.0,
        })
    }
}

/// What the UpdateStack call carries to keep the live scaling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub group: String,
    pub min: i64,
    pub max: i64,
    pub live_desired: i64,
    /// Every template parameter with its value (moto and AWS both want them explicit).
    pub parameters: BTreeMap<String, String>,
    /// What was changed to keep scaling, for the plan output.
    pub notes: Vec<String>,
}

/// Checks MinSize ≤ live DesiredCapacity ≤ MaxSize and binds DesiredCapacity (and a
/// MinInstancesInService parameter) to the live value.
pub fn plan(
    template: &mut Template,
    given: &BTreeMap<String, String>,
    live_desired: i64,
) -> Result<Plan, Refusal> {
    let group = template.group().map_err(Refusal::Template)?;
    let resolve = |t: &Template, prop: &str| {
        t.resolve(&t.size(&group, prop), given)
            .map_err(|e| Refusal::Template(format!("{group}.Properties.{prop}: {e}")))
    };
    let (min, max) = (resolve(template, "MinSize")?, resolve(template, "MaxSize")?);
    if !(min <= live_desired && live_desired <= max) {
        return Err(Refusal::CapacityOutOfRange {
            group,
            min,
            desired: live_desired,
            max,
        });
    }
    let mut parameters = BTreeMap::new();
    for name in template.parameter_names() {
        if let Some(v) = given
            .get(&name)
            .cloned()
            .or_else(|| template.parameter_default(&name))
        {
            parameters.insert(name, v);
        }
    }
    for (k, v) in given {
        if !template.has_parameter(k) {
            return Err(Refusal::Template(format!(
                "parameter {k} is not declared in the template"
            )));
        }
        parameters.insert(k.clone(), v.clone());
    }
    let mut notes = Vec::new();
    match template.size(&group, "DesiredCapacity") {
        Size::Param(p) => {
            parameters.insert(p.clone(), live_desired.to_string());
            notes.push(format!(
                "parameter {p} = {live_desired} (live DesiredCapacity)"
            ));
        }
        Size::Literal(_) | Size::Missing => {
            template.set_literal(&group, "DesiredCapacity", live_desired);
            notes.push(format!(
                "{group}.Properties.DesiredCapacity = {live_desired} (live DesiredCapacity)"
            ));
        }
        Size::Other(s) => {
            return Err(Refusal::Template(format!(
                "{group}.Properties.DesiredCapacity is {s}: cannot bind it to the live value"
            )))
        }
    }
    if template.has_parameter("MinInstancesInService") {
        parameters.insert("MinInstancesInService".into(), live_desired.to_string());
        notes.push(format!(
            "parameter MinInstancesInService = {live_desired} (live DesiredCapacity)"
        ));
    }
    for name in template.parameter_names() {
        if !parameters.contains_key(&name) {
            return Err(Refusal::Template(format!(
                "parameter {name} has no value: pass --parameter {name}=VALUE"
            )));
        }
    }
    Ok(Plan {
        group,
        min,
        max,
        live_desired,
        parameters,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = r#"{"Parameters":{"DesiredCapacity":{"Type":"Number","Default":"2"},"MinInstancesInService":{"Type":"Number","Default":"1"},"AppVersion":{"Type":"String"}},
      "Resources":{"G":{"Type":"AWS::AutoScaling::AutoScalingGroup","Properties":{"MinSize":"1","MaxSize":"4","DesiredCapacity":{"Ref":"DesiredCapacity"}}}}}"#;

    fn given(v: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("AppVersion".to_string(), v.to_string())])
    }

    #[test]
    fn status_and_age() {
        assert!(check_status("s", "UPDATE_COMPLETE").is_ok());
        assert!(check_status("s", "UPDATE_ROLLBACK_COMPLETE").is_ok());
        assert!(matches!(
            check_status("s", "UPDATE_IN_PROGRESS"),
            Err(Refusal::NotSettled { .. })
        ));
        assert!(check_status("s", "ROLLBACK_COMPLETE").is_err());
        let week = Duration::from_secs(7 * 86_400);
        assert!(check_age("s", Duration::from_secs(86_400), week).is_ok());
        let err = check_age("s", Duration::from_secs(8 * 86_400), week)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("8.0 days") && err.contains("re-provision"),
            "{err}"
        );
    }

    #[test]
    fn live_capacity_is_kept_and_bound_parameters_follow_it() {
        let mut t = Template::parse(T).unwrap();
        let p = plan(&mut t, &given("7"), 3).unwrap();
        assert_eq!(p.parameters["DesiredCapacity"], "3");
        assert_eq!(p.parameters["MinInstancesInService"], "3");
        assert_eq!(p.parameters["AppVersion"], "7");
        assert_eq!((p.min, p.max), (1, 4));
    }

    #[test]
    fn capacity_out_of_range_and_missing_parameters_are_refused() {
        let mut t = Template::parse(T).unwrap();
        assert!(matches!(
            plan(&mut t, &given("7"), 5),
            Err(Refusal::CapacityOutOfRange {
                desired: 5,
                max: 4,
                ..
            })
        ));
        let err = plan(&mut t, &BTreeMap::new(), 2).unwrap_err().to_string();
        assert!(err.contains("AppVersion"), "{err}");
        let err = plan(
            &mut t,
            &BTreeMap::from([("Nope".to_string(), "1".to_string())]),
            2,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("Nope"), "{err}");
    }

    #[test]
    fn a_hard_coded_desired_capacity_is_overwritten_in_the_template() {
        let mut t = Template::parse(r#"{"Resources":{"G":{"Type":"AWS::AutoScaling::AutoScalingGroup","Properties":{"MinSize":1,"MaxSize":9,"DesiredCapacity":2}}}}"#).unwrap();
        let p = plan(&mut t, &BTreeMap::new(), 6).unwrap();
        assert_eq!(t.size("G", "DesiredCapacity"), Size::Literal(6));
        assert!(p.notes[0].contains("= 6"));
    }
}

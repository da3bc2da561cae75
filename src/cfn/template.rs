//! CloudFormation templates as the build box sees them: read from JSON or YAML (short-form tags
//! such as `!Ref` become their JSON long form, so one JSON document is checked, changed and sent),
//! the Auto Scaling group found, its sizes resolved against the parameters.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

pub const ASG_TYPE: &str = "AWS::AutoScaling::AutoScalingGroup";

#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub body: Value,
}

/// A size property of the group: a literal, or a parameter reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Size {
    Literal(i64),
    Param(String),
    Missing,
    Other(String),
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let trimmed = text.trim_start();
        let body = if trimmed.starts_with('{') {
            serde_json::from_str(text).map_err(|e| format!("template is not valid JSON: {e}"))?
        } else {
            let yaml: serde_yaml::Value = serde_yaml::from_str(text)
                .map_err(|e| format!("template is not valid YAML: {e}"))?;
            yaml_to_json(yaml)?
        };
        if !body.get("Resources").is_some_and(Value::is_object) {
            return Err("template has no Resources section".into());
        }
        Ok(Template { body })
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.body).expect("templates serialize")
    }

    /// Logical ids of the Auto Scaling groups, in order.
    pub fn groups(&self) -> Vec<String> {
        self.body["Resources"]
            .as_object()
            .map(|r| {
                r.iter()
                    .filter(|(_, v)| v["Type"] == ASG_TYPE)
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The one group under hot swap: the only one, or an error naming them.
    pub fn group(&self) -> Result<String, String> {
        match self.groups().as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(format!("template has no {ASG_TYPE}")),
            many => Err(format!(
                "template has several Auto Scaling groups ({}): hot swap handles one",
                many.join(", ")
            )),
        }
    }

    pub fn size(&self, group: &str, property: &str) -> Size {
        size_of(&self.body["Resources"][group]["Properties"][property])
    }

    pub fn rolling_update(&self, group: &str) -> Option<&Value> {
        self.body["Resources"][group]
            .get("UpdatePolicy")
            .and_then(|p| p.get("AutoScalingRollingUpdate"))
    }

    pub fn parameter_default(&self, name: &str) -> Option<String> {
        match self.body["Parameters"][name].get("Default")? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    pub fn has_parameter(&self, name: &str) -> bool {
        self.body["Parameters"].get(name).is_some()
    }

    pub fn parameter_names(&self) -> Vec<String> {
        self.body["Parameters"]
            .as_object()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Resolves a size with the given parameter values (falling back to defaults).
    pub fn resolve(&self, size: &Size, params: &BTreeMap<String, String>) -> Result<i64, String> {
        match size {
            Size::Literal(n) => Ok(*n),
            Size::Param(p) => {
                let v = params
                    .get(p)
                    .cloned()
                    .or_else(|| self.parameter_default(p))
                    .ok_or_else(|| format!("parameter {p} has no value and no default"))?;
                v.trim()
                    .parse()
                    .map_err(|_| format!("parameter {p} = {v:?} is not a whole number"))
            }
            Size::Missing => Err("not set".into()),
            Size::Other(s) => Err(format!("{s} cannot be resolved here")),
        }
    }

    /// Writes a literal into the group's property (for a hard-coded DesiredCapacity).
    pub fn set_literal(&mut self, group: &str, property: &str, value: i64) {
        self.body["Resources"][group]["Properties"][property] = json!(value.to_string());
    }
}

fn size_of(v: &Value) -> Size {
    match v {
        Value::Null => Size::Missing,
        Value::Number(n) => n
            .as_i64()
            .map(Size::Literal)
            .unwrap_or_else(|| Size::Other(n.to_string())),
        Value::String(s) => s
            .trim()
            .parse()
            .map(Size::Literal)
            .unwrap_or_else(|_| Size::Other(s.clone())),
        Value::Object(o) => match o.get("Ref") {
            Some(Value::String(p)) if o.len() == 1 => Size::Param(p.clone()),
            _ => Size::Other(v.to_string()),
        },
        other => Size::Other(other.to_string()),
    }
}

/// YAML with CloudFormation's short-form tags → JSON long form.
fn yaml_to_json(v: serde_yaml::Value) -> Result<Value, String> {
    use serde_yaml::Value as Y;
    Ok(match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => serde_json::to_value(&n).map_err(|e| e.to_string())?,
        Y::String(s) => Value::String(s),
        Y::Sequence(seq) => Value::Array(
            seq.into_iter()
                .map(yaml_to_json)
                .collect::<Result<_, _>>()?,
        ),
        Y::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    other => return Err(format!("unsupported YAML key {other:?}")),
                };
                out.insert(key, yaml_to_json(v)?);
            }
            Value::Object(out)
        }
        Y::Tagged(t) => {
            let tag = t.tag.to_string();
            let tag = tag.trim_start_matches('!');
            let inner = yaml_to_json(t.value)?;
            match tag {
                "Ref" => json!({ "Ref": inner }),
                "Condition" => json!({ "Condition": inner }),
                "GetAtt" => match inner {
                    Value::String(s) => {
                        let (res, attr) = s
                            .split_once('.')
                            .ok_or_else(|| format!("!GetAtt {s}: expected Resource.Attribute"))?;
                        json!({ "Fn::GetAtt": [res, attr] })
                    }
                    other => json!({ "Fn::GetAtt": other }),
                },
                other => json!({ format!("Fn::{other}"): inner }),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
Parameters:
  DesiredCapacity: {Type: Number, Default: 2}
  MinInstancesInService: {Type: Number, Default: 1}
Resources:
  AppGroup:
    Type: AWS::AutoScaling::AutoScalingGroup
    UpdatePolicy:
      AutoScalingRollingUpdate:
        MaxBatchSize: 10
        MinInstancesInService: !Ref MinInstancesInService
    Properties:
      MinSize: 1
      MaxSize: "10"
      DesiredCapacity: !Ref DesiredCapacity
      LaunchTemplate:
        Version: !GetAtt AppLaunchTemplate.LatestVersionNumber
      Tags: [{Key: name, Value: !Sub "${AWS::StackName}-app"}]
"#;

    #[test]
    fn yaml_short_forms_become_json_long_forms() {
        let t = Template::parse(YAML).unwrap();
        let g = &t.body["Resources"]["AppGroup"]["Properties"];
        assert_eq!(g["DesiredCapacity"], json!({"Ref": "DesiredCapacity"}));
        assert_eq!(
            g["LaunchTemplate"]["Version"],
            json!({"Fn::GetAtt": ["AppLaunchTemplate", "LatestVersionNumber"]})
        );
        assert_eq!(
            g["Tags"][0]["Value"],
            json!({"Fn::Sub": "${AWS::StackName}-app"})
        );
        assert_eq!(t.group().unwrap(), "AppGroup");
    }

    #[test]
    fn sizes_resolve_from_literals_parameters_and_defaults() {
        let t = Template::parse(YAML).unwrap();
        let mut params = BTreeMap::new();
        assert_eq!(t.resolve(&t.size("AppGroup", "MinSize"), &params), Ok(1));
        assert_eq!(t.resolve(&t.size("AppGroup", "MaxSize"), &params), Ok(10));
        assert_eq!(
            t.size("AppGroup", "DesiredCapacity"),
            Size::Param("DesiredCapacity".into())
        );
        assert_eq!(
            t.resolve(&t.size("AppGroup", "DesiredCapacity"), &params),
            Ok(2)
        );
        params.insert("DesiredCapacity".into(), "4".into());
        assert_eq!(
            t.resolve(&t.size("AppGroup", "DesiredCapacity"), &params),
            Ok(4)
        );
    }

    #[test]
    fn json_templates_and_errors() {
        let t = Template::parse(r#"{"Resources":{"G":{"Type":"AWS::AutoScaling::AutoScalingGroup","Properties":{"DesiredCapacity":3}}}}"#).unwrap();
        assert_eq!(t.size("G", "DesiredCapacity"), Size::Literal(3));
        let mut t2 = t.clone();
        t2.set_literal("G", "DesiredCapacity", 5);
        assert_eq!(t2.size("G", "DesiredCapacity"), Size::Literal(5));
        assert!(Template::parse("{}").unwrap_err().contains("Resources"));
        assert!(Template::parse(r#"{"Resources":{}}"#)
            .unwrap()
            .group()
            .unwrap_err()
            .contains("no AWS::AutoScaling"));
    }
}

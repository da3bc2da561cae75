//! A resource's Metadata as CloudFormation would hand it out: `Ref` to parameters and pseudo
//! parameters, `Fn::Sub` (both forms) and `Fn::Join` resolved against a stack's parameters. For
//! an endpoint whose DescribeStackResource carries no Metadata (moto), the metadata watcher reads
//! the template and resolves it here; anything it cannot resolve (a resource's physical id,
//! `Fn::GetAtt`) is an error naming it.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Values for `Ref` and `${...}`: the stack's parameters and the pseudo parameters.
pub type Names = BTreeMap<String, String>;

/// The pseudo parameters of a stack, from its id
/// (`arn:aws:cloudformation:REGION:ACCOUNT:stack/NAME/UUID`).
pub fn pseudo(stack_id: &str, stack_name: &str) -> Names {
    let parts: Vec<&str> = stack_id.split(':').collect();
    let get = |i: usize, default: &str| parts.get(i).copied().unwrap_or(default).to_string();
    let partition = get(1, "aws");
    BTreeMap::from([
        ("AWS::StackName".to_string(), stack_name.to_string()),
        ("AWS::StackId".to_string(), stack_id.to_string()),
        ("AWS::Region".to_string(), get(3, "")),
        ("AWS::AccountId".to_string(), get(4, "")),
        (
            "AWS::URLSuffix".to_string(),
            if partition == "aws-cn" {
                "amazonaws.com.cn".into()
            } else {
                "amazonaws.com".into()
            },
        ),
        ("AWS::Partition".to_string(), partition),
    ])
}

/// `v` with every intrinsic function resolved.
pub fn resolve(v: &Value, names: &Names) -> Result<Value, String> {
    match v {
        Value::Array(items) => items.iter().map(|i| resolve(i, names)).collect(),
        Value::Object(map) if map.len() == 1 => {
            let (k, arg) = map.iter().next().expect("one entry");
            match k.as_str() {
                "Ref" => {
                    let name = arg.as_str().ok_or("Ref takes a name")?;
                    names
                        .get(name)
                        .map(|s| Value::String(s.clone()))
                        .ok_or_else(|| format!("Ref {name}: not a parameter this stack has"))
                }
                "Fn::Sub" => sub(arg, names).map(Value::String),
                "Fn::Join" => {
                    let parts = arg
                        .as_array()
                        .filter(|a| a.len() == 2)
                        .ok_or("Fn::Join takes [DELIMITER, [VALUES]]")?;
                    let sep = parts[0].as_str().ok_or("Fn::Join's delimiter is text")?;
                    let items = resolve(&parts[1], names)?;
                    let texts: Result<Vec<String>, String> = items
                        .as_array()
                        .ok_or("Fn::Join takes a list of values")?
                        .iter()
                        .map(|i| {
                            i.as_str()
                                .map(String::from)
                                .ok_or_else(|| "Fn::Join joins text".to_string())
                        })
                        .collect();
                    Ok(Value::String(texts?.join(sep)))
                }
                f if f.starts_with("Fn::") || f == "Condition" => {
                    Err(format!("{f} cannot be resolved from the template alone"))
                }
                _ => Ok(Value::Object(resolve_map(map, names)?)),
            }
        }
        Value::Object(map) => Ok(Value::Object(resolve_map(map, names)?)),
        other => Ok(other.clone()),
    }
}

fn resolve_map(map: &Map<String, Value>, names: &Names) -> Result<Map<String, Value>, String> {
    map.iter()
        .map(|(k, v)| Ok((k.clone(), resolve(v, names)?)))
        .collect()
}

/// `Fn::Sub`: "text ${Name} ${!Literal}", or ["text", {Name: value}].
fn sub(arg: &Value, names: &Names) -> Result<String, String> {
    let (text, vars) = match arg {
        Value::String(s) => (s.as_str(), BTreeMap::new()),
        Value::Array(a) if a.len() == 2 => {
            let text = a[0].as_str().ok_or("Fn::Sub's first item is text")?;
            let mut vars = BTreeMap::new();
            for (k, v) in a[1].as_object().ok_or("Fn::Sub's second item is a map")? {
                let v = resolve(v, names)?;
                vars.insert(
                    k.clone(),
                    v.as_str().ok_or("Fn::Sub's values are text")?.to_string(),
                );
            }
            (text, vars)
        }
        _ => return Err("Fn::Sub takes text or [text, {variables}]".into()),
    };
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or("Fn::Sub: an unclosed ${")?;
        let name = &after[..end];
        if let Some(literal) = name.strip_prefix('!') {
            out.push_str(&format!("${{{literal}}}"));
        } else {
            let value = vars
                .get(name)
                .or_else(|| names.get(name))
                .ok_or_else(|| format!("Fn::Sub ${{{name}}}: not a parameter this stack has"))?;
            out.push_str(value);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metadata_resolves_as_cloudformation_would() {
        let mut names = pseudo(
            "arn:aws:cloudformation:eu-west-1:123456789012:stack/shop/abc",
            "shop",
        );
        names.insert("AppVersion".into(), "42".into());
        names.insert("DeployId".into(), "d-7".into());
        let meta = json!({"hotswap": {
            "deploy_id": {"Ref": "DeployId"},
            "services": {"web": {
                "image": {"Fn::Sub": "${AWS::AccountId}.dkr.ecr.${AWS::Region}.${AWS::URLSuffix}/web:${AppVersion}"},
                "version": {"Fn::Join": ["", ["v", {"Ref": "AppVersion"}]]},
                "note": {"Fn::Sub": ["${X} ${!Kept}", {"X": {"Ref": "AWS::StackName"}}]}
            }}
        }});
        let got = resolve(&meta, &names).unwrap();
        assert_eq!(got["hotswap"]["deploy_id"], "d-7");
        let web = &got["hotswap"]["services"]["web"];
        assert_eq!(
            web["image"],
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/web:42"
        );
        assert_eq!(web["version"], "v42");
        assert_eq!(web["note"], "shop ${Kept}");
        let e = resolve(&json!({"Fn::GetAtt": ["G", "Arn"]}), &names).unwrap_err();
        assert!(e.contains("Fn::GetAtt"), "{e}");
        let e = resolve(&json!({"Ref": "Nope"}), &names).unwrap_err();
        assert!(e.contains("Nope"), "{e}");
    }
}

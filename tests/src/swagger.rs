//! Firecracker's swagger file (the fixture in `tests/fixtures/firecracker/`)
//! as a checker of the API's answers: for a request's path and method, the
//! statuses the file allows and the schema each body must match. The
//! schemas use swagger 2.0's subset of JSON Schema, which `check` covers:
//! `$ref`, `type`, `required`, `properties`, `additionalProperties`,
//! `items`, `enum`, `minimum` and `maximum`.

use serde_json::{Map, Value};

/// The swagger document, as JSON.
pub struct Swagger {
    doc: Value,
}

fn yaml_to_json(v: serde_yaml::Value) -> Value {
    match v {
        serde_yaml::Value::Null => Value::Null,
        serde_yaml::Value::Bool(b) => Value::Bool(b),
        serde_yaml::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(0.0))
            }
        }
        serde_yaml::Value::String(s) => Value::String(s),
        serde_yaml::Value::Sequence(s) => Value::Array(s.into_iter().map(yaml_to_json).collect()),
        serde_yaml::Value::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    serde_yaml::Value::String(s) => s,
                    serde_yaml::Value::Number(n) => n.to_string(),
                    serde_yaml::Value::Bool(b) => b.to_string(),
                    other => format!("{other:?}"),
                };
                out.insert(key, yaml_to_json(v));
            }
            Value::Object(out)
        }
        serde_yaml::Value::Tagged(t) => yaml_to_json(t.value),
    }
}

impl Swagger {
    /// The fixture.
    pub fn load() -> Swagger {
        let path = crate::repo_root().join("tests/fixtures/firecracker/firecracker.yaml");
        let text = std::fs::read_to_string(&path).expect("the swagger fixture");
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text).expect("swagger YAML");
        Swagger {
            doc: yaml_to_json(yaml),
        }
    }

    /// The operation for `path` (a concrete path such as `/drives/root`)
    /// and `method` (lower case), if the file has one.
    fn operation(&self, path: &str, method: &str) -> Option<&Value> {
        let paths = self.doc["paths"].as_object()?;
        let want: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        for (template, ops) in paths {
            let t: Vec<&str> = template.trim_end_matches('/').split('/').collect();
            let fits = t.len() == want.len()
                && t.iter()
                    .zip(&want)
                    .all(|(a, b)| a == b || (a.starts_with('{') && a.ends_with('}')));
            if fits {
                return ops.get(method);
            }
        }
        None
    }

    /// Checks an answer of `status` with `body` to `method path`: the file
    /// must allow the status for that operation (an unknown operation must
    /// be answered 400 with the Error schema) and the body must match its
    /// schema (none: empty).
    pub fn check_answer(
        &self,
        method: &str,
        path: &str,
        status: u16,
        body: &str,
    ) -> Result<(), String> {
        let error_schema = serde_json::json!({"$ref": "#/definitions/Error"});
        let schema = match self.operation(path, &method.to_ascii_lowercase()) {
            None => {
                if status != 400 {
                    return Err(format!(
                        "{method} {path} is not in the API, answered {status}"
                    ));
                }
                Some(error_schema)
            }
            Some(op) => {
                let responses = &op["responses"];
                let r = responses
                    .get(status.to_string())
                    .or_else(|| (status >= 400).then(|| responses.get("default")).flatten())
                    .ok_or_else(|| {
                        format!("{method} {path}: status {status} is not one the API gives")
                    })?;
                r.get("schema").cloned()
            }
        };
        match schema {
            None => {
                if body.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "{method} {path} {status}: a body where none belongs: {body}"
                    ))
                }
            }
            Some(schema) => {
                let v: Value = serde_json::from_str(body)
                    .map_err(|e| format!("{method} {path} {status}: not JSON ({e}): {body}"))?;
                self.check(&schema, &v, "$")
                    .map_err(|e| format!("{method} {path} {status}: {e}\n{body}"))
            }
        }
    }

    /// Checks `v` against `schema` (at `at`, for messages).
    pub fn check(&self, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            let name = r
                .strip_prefix("#/definitions/")
                .ok_or(format!("odd $ref {r}"))?;
            let def = &self.doc["definitions"][name];
            if def.is_null() {
                return Err(format!("no definition {name}"));
            }
            return self.check(def, v, at);
        }
        if let Some(t) = schema.get("type").and_then(Value::as_str) {
            let ok = match t {
                "object" => v.is_object(),
                "array" => v.is_array(),
                "string" => v.is_string(),
                "integer" => v.is_i64() || v.is_u64(),
                "number" => v.is_number(),
                "boolean" => v.is_boolean(),
                _ => true,
            };
            if !ok {
                return Err(format!("{at}: expected {t}, got {v}"));
            }
        }
        if let Some(values) = schema.get("enum").and_then(Value::as_array) {
            if !values.contains(v) {
                return Err(format!("{at}: {v} is not one of {values:?}"));
            }
        }
        if let (Some(min), Some(n)) = (schema.get("minimum").and_then(Value::as_f64), v.as_f64()) {
            if n < min {
                return Err(format!("{at}: {n} is below the minimum {min}"));
            }
        }
        if let (Some(max), Some(n)) = (schema.get("maximum").and_then(Value::as_f64), v.as_f64()) {
            if n > max {
                return Err(format!("{at}: {n} is above the maximum {max}"));
            }
        }
        if let Some(obj) = v.as_object() {
            for req in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = req.as_str().unwrap_or("");
                if !obj.contains_key(name) {
                    return Err(format!("{at}: the required field {name} is missing"));
                }
            }
            let props = schema.get("properties").and_then(Value::as_object);
            for (k, val) in obj {
                match props.and_then(|p| p.get(k)) {
                    Some(s) => self.check(s, val, &format!("{at}.{k}"))?,
                    None => match schema.get("additionalProperties") {
                        Some(Value::Bool(false)) => {
                            return Err(format!("{at}: {k} is not a field of this object"))
                        }
                        Some(s @ Value::Object(_)) => self.check(s, val, &format!("{at}.{k}"))?,
                        _ => {}
                    },
                }
            }
        }
        if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
            for (i, item) in arr.iter().enumerate() {
                self.check(items, item, &format!("{at}[{i}]"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checker refuses what the file does not allow.
    #[test]
    fn the_checker_catches_what_breaks_the_schema() {
        let s = Swagger::load();
        let info = r#"{"app_name": "vmm", "id": "x", "state": "Running", "vmm_version": "1"}"#;
        s.check_answer("GET", "/", 200, info).unwrap();
        for bad in [
            r#"{"app_name": "vmm", "id": "x", "state": "Ended", "vmm_version": "1"}"#,
            r#"{"app_name": "vmm", "id": "x", "state": "Running"}"#,
            r#"{"app_name": 1, "id": "x", "state": "Running", "vmm_version": "1"}"#,
        ] {
            assert!(s.check_answer("GET", "/", 200, bad).is_err(), "{bad}");
        }
        let mc = r#"{"vcpu_count": 33, "mem_size_mib": 128}"#;
        assert!(s.check_answer("GET", "/machine-config", 200, mc).is_err());
        s.check_answer("PUT", "/drives/root", 204, "").unwrap();
        assert!(s.check_answer("PUT", "/drives/root", 204, "{}").is_err());
        assert!(s.check_answer("PUT", "/drives/root", 200, "{}").is_err());
        s.check_answer("PUT", "/drives/root", 400, r#"{"fault_message": "x"}"#)
            .unwrap();
        assert!(s
            .check_answer("PUT", "/drives/root", 400, r#"{"fault_message": 3}"#)
            .is_err());
        assert!(s.check_answer("DELETE", "/", 204, "").is_err());
        s.check_answer("PUT", "/nowhere", 400, r#"{"fault_message": "x"}"#)
            .unwrap();
    }
}

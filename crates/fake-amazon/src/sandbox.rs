//! The SP-API static sandbox: answers from the `x-amzn-api-sandbox.static` examples of Amazon's
//! embedded models, parsed generically.

use serde_json::Value;

/// Amazon's models, embedded.
pub const MODELS: &[(&str, &str)] = &[
    (
        "tokens_2021-03-01.json",
        include_str!("../models/tokens_2021-03-01.json"),
    ),
    ("sellers.json", include_str!("../models/sellers.json")),
    (
        "application_2023-11-30.json",
        include_str!("../models/application_2023-11-30.json"),
    ),
];

/// Where a parameter goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    Path,
    Query,
    Header,
    Body,
}

/// One static example.
#[derive(Debug, Clone)]
struct Example {
    status: u16,
    /// `request.parameters`, or none when the example names no request (matches anything).
    parameters: Option<serde_json::Map<String, Value>>,
    response: Option<Value>,
}

/// One operation with its examples.
#[derive(Debug, Clone)]
struct Operation {
    method: String,
    template: Vec<String>,
    operation_id: String,
    parameters: Vec<(String, Location)>,
    examples: Vec<Example>,
}

/// The parsed sandbox.
#[derive(Debug, Clone, Default)]
pub struct Sandbox {
    operations: Vec<Operation>,
}

/// What the sandbox answers.
#[derive(Debug, Clone, PartialEq)]
pub enum SandboxAnswer {
    /// An example matched: its status and body (none for an empty body).
    Matched {
        /// The operation.
        operation_id: String,
        /// The example's status.
        status: u16,
        /// The example's response.
        body: Option<Value>,
    },
    /// The path and method name an operation, but no example matches.
    NoMatch {
        /// The operation.
        operation_id: String,
    },
    /// No operation at this path and method.
    UnknownOperation,
}

impl Sandbox {
    /// Parses the embedded models. A model that fails to parse is skipped (they are fixed files
    /// checked by the test suite).
    pub fn load() -> Sandbox {
        let mut operations = Vec::new();
        for (_, text) in MODELS {
            let Ok(model) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            let Some(paths) = model.get("paths").and_then(Value::as_object) else {
                continue;
            };
            for (path, item) in paths {
                let Some(item) = item.as_object() else {
                    continue;
                };
                let shared_params = item.get("parameters").map(parse_parameters).unwrap_or_default();
                for (method, op) in item {
                    if method == "parameters" {
                        continue;
                    }
                    let mut parameters = shared_params.clone();
                    parameters.extend(op.get("parameters").map(parse_parameters).unwrap_or_default());
                    let mut examples = Vec::new();
                    if let Some(responses) = op.get("responses").and_then(Value::as_object) {
                        for (status, response) in responses {
                            let Ok(status) = status.parse::<u16>() else {
                                continue;
                            };
                            let statics = response
                                .pointer("/x-amzn-api-sandbox/static")
                                .and_then(Value::as_array);
                            for example in statics.into_iter().flatten() {
                                examples.push(Example {
                                    status,
                                    parameters: example
                                        .pointer("/request/parameters")
                                        .and_then(Value::as_object)
                                        .cloned(),
                                    response: example.get("response").cloned(),
                                });
                            }
                        }
                    }
                    // Successes first, then errors, each in file order.
                    examples.sort_by_key(|e| e.status);
                    operations.push(Operation {
                        method: method.to_ascii_uppercase(),
                        template: segments(path),
                        operation_id: op
                            .get("operationId")
                            .and_then(Value::as_str)
                            .unwrap_or("unknown")
                            .to_owned(),
                        parameters,
                        examples,
                    });
                }
            }
        }
        Sandbox { operations }
    }

    /// How many operations were parsed.
    pub fn operation_count(&self) -> usize {
        self.operations.len()
    }

    /// Answers a request.
    pub fn answer(
        &self,
        method: &str,
        path: &str,
        query: &[(String, String)],
        headers: &axum::http::HeaderMap,
        body: &[u8],
    ) -> SandboxAnswer {
        let actual = segments(path);
        let Some((op, captures)) = self.operations.iter().find_map(|op| {
            if op.method != method {
                return None;
            }
            match_template(&op.template, &actual).map(|c| (op, c))
        }) else {
            return SandboxAnswer::UnknownOperation;
        };
        let body_json: Option<Value> = if body.is_empty() {
            None
        } else {
            serde_json::from_slice(body).ok()
        };
        for example in &op.examples {
            let Some(params) = &example.parameters else {
                return matched(op, example);
            };
            let all = params.iter().all(|(name, spec)| {
                let expected = spec.get("value").unwrap_or(&Value::Null);
                let location = op
                    .parameters
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, l)| l.clone())
                    .unwrap_or(if name == "body" {
                        Location::Body
                    } else {
                        Location::Query
                    });
                match location {
                    Location::Body => body_json.as_ref() == Some(expected),
                    Location::Path => captures
                        .iter()
                        .find(|(n, _)| n == name)
                        .is_some_and(|(_, v)| scalar_eq(expected, v)),
                    Location::Query => {
                        let values: Vec<&str> = query
                            .iter()
                            .filter(|(k, _)| k == name)
                            .map(|(_, v)| v.as_str())
                            .collect();
                        match expected {
                            Value::Array(items) => {
                                let joined: Vec<String> = values
                                    .iter()
                                    .flat_map(|v| v.split(','))
                                    .map(str::to_owned)
                                    .collect();
                                items.len() == joined.len()
                                    && items.iter().zip(&joined).all(|(e, v)| scalar_eq(e, v))
                            }
                            _ => values.len() == 1 && scalar_eq(expected, values[0]),
                        }
                    }
                    Location::Header => headers
                        .get(name.as_str())
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| scalar_eq(expected, v)),
                }
            });
            if all {
                return matched(op, example);
            }
        }
        SandboxAnswer::NoMatch {
            operation_id: op.operation_id.clone(),
        }
    }
}

fn matched(op: &Operation, example: &Example) -> SandboxAnswer {
    SandboxAnswer::Matched {
        operation_id: op.operation_id.clone(),
        status: example.status,
        body: example.response.clone(),
    }
}

fn parse_parameters(params: &Value) -> Vec<(String, Location)> {
    params
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let name = p.get("name")?.as_str()?.to_owned();
            let location = match p.get("in")?.as_str()? {
                "path" => Location::Path,
                "query" => Location::Query,
                "header" => Location::Header,
                "body" => Location::Body,
                _ => return None,
            };
            Some((name, location))
        })
        .collect()
}

/// Path segments, percent-decoded.
pub fn segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect()
}

/// Decodes `%XX` escapes (not `+`), keeping invalid ones as they are.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex_val(bytes[i + 1]), hex_val(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Matches path segments against a template with `{name}` segments; returns the captures.
pub fn match_template(template: &[String], actual: &[String]) -> Option<Vec<(String, String)>> {
    if template.len() != actual.len() {
        return None;
    }
    let mut captures = Vec::new();
    for (t, a) in template.iter().zip(actual) {
        if t.starts_with('{') && t.ends_with('}') && t.len() > 2 {
            if a.is_empty() {
                return None;
            }
            captures.push((t[1..t.len() - 1].to_owned(), a.clone()));
        } else if t != a {
            return None;
        }
    }
    Some(captures)
}

fn scalar_eq(expected: &Value, actual: &str) -> bool {
    match expected {
        Value::String(s) => s == actual,
        Value::Null => false,
        other => serde_json::from_str::<Value>(actual).is_ok_and(|v| v == *other),
    }
}

//! `/openapi.json`: the HTTP surface as OpenAPI 3.1, built from one table ([`OPERATIONS`]).
//!
//! One table rather than `utoipa`'s path macros: the handlers take our own extractors and
//! answer three error shapes, so the macros would be annotations beside each handler saying no
//! more than a row here, with nothing tying them to what the handler does. What ties this table
//! to the server is the test `openapi` in `tests/server/`, which calls every documented status of
//! every operation on a running server and checks the body against the documented shape, and
//! fails on a route of [`crate::app::ROUTES`] missing here.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::app::Access;
use crate::state::AppState;

/// What a response's body looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `{"error":{"code","message"}}` (`/v1`, the operator's routes, the probes).
    ApiError,
    /// `{"success":false,"error":{"message"}}` (the seed-compatible endpoints).
    SeedError,
    /// `{"error","error_description"}` (LWA's own shape, on `/auth/o2/token`).
    LwaError,
    /// A JSON object with these fields (name, JSON type; a type ending in `?` may be null).
    Object(&'static [(&'static str, &'static str)]),
    /// A redirect; the `Location` header is the answer.
    Redirect,
    /// Plain text.
    Text,
    /// An HTML page.
    Html,
    /// Amazon's own answer, passed through as it came (status, headers, body), with the
    /// broker's `x-lwa-broker-token` header added.
    Upstream,
}

/// One documented answer.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    pub status: u16,
    pub description: &'static str,
    pub shape: Shape,
}

/// One operation.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub access: Access,
    /// Request body fields (JSON, or a form on the compatible endpoints), `(name, type, required)`.
    pub body: &'static [(&'static str, &'static str, bool)],
    /// Query parameters `(name, required)`.
    pub query: &'static [(&'static str, bool)],
    pub answers: &'static [Answer],
}

const fn a(status: u16, description: &'static str, shape: Shape) -> Answer {
    Answer {
        status,
        description,
        shape,
    }
}

const UNAUTHORIZED: Answer = a(401, "No valid API key", Shape::ApiError);
const NOT_FOUND: Answer = a(404, "No such connection for this tenant", Shape::ApiError);
const BAD_REQUEST: Answer = a(
    400,
    "The request is malformed or a field is wrong",
    Shape::ApiError,
);
const ADMIN_UNAUTHORIZED: Answer = a(401, "No valid admin token", Shape::ApiError);

/// A connection as `/v1` shows it (never a token).
const CONNECTION: &[(&str, &str)] = &[
    ("id", "string"),
    ("tenant_id", "string"),
    ("app", "string"),
    ("api", "string"),
    ("region", "string"),
    ("selling_partner_id", "string?"),
    ("name", "string?"),
    ("status", "string"),
    ("token_secret", "string"),
    ("profiles", "array"),
    ("authorized_at", "string"),
    ("access_token_expires_at", "string?"),
    ("last_error", "string?"),
    ("claimed", "boolean"),
    ("created_at", "string"),
];
const TOKEN: &[(&str, &str)] = &[
    ("access_token", "string"),
    ("token_type", "string"),
    ("expires_at", "string"),
    ("expires_in", "integer"),
];
const LINK: &[(&str, &str)] = &[("url", "string"), ("expires_at", "string")];
const PAGE_AFTER: &[(&str, &str)] = &[("data", "array"), ("next_after", "string?")];
const PAGE_BEFORE: &[(&str, &str)] = &[("data", "array"), ("next_before", "integer?")];
const WEBHOOK: &[(&str, &str)] = &[("url", "string?"), ("signing_secret_set", "boolean")];
const IMPORTED: &[(&str, &str)] = &[
    ("imported", "integer"),
    ("failed", "integer"),
    ("results", "array"),
];
const CONNECTION_ID: &str = "/v1/connections/{id}";

/// The method of an operation that takes any method (the proxy): documented as each of
/// [`ANY_METHODS`].
pub const ANY: &str = "ANY";
/// What the proxy's operations say besides their answers.
const PROXY_DESCRIPTION: &str = "`{path}` is the rest of Amazon's URL, slashes and query included; \
    it goes to the connection's regional SP-API or Ads host with the connection's credentials \
    injected, and restricted operations get a Restricted Data Token. Besides the answers listed: \
    413 over the body limit, 429 when Amazon still throttles after the time budget, 502 or 504 \
    when Amazon cannot be reached in time.";

/// The methods an [`ANY`] operation is documented with.
pub const ANY_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Every operation the server documents.
pub const OPERATIONS: &[Operation] = &[
    Operation {
        method: "GET",
        path: "/healthz",
        summary: "Liveness: the process answers",
        access: Access::Public,
        body: &[],
        query: &[],
        answers: &[a(200, "`ok`", Shape::Text)],
    },
    Operation {
        method: "GET",
        path: "/readyz",
        summary: "Readiness: the database answers and its migrations are current",
        access: Access::Public,
        body: &[],
        query: &[],
        answers: &[
            a(200, "Ready", Shape::Object(&[("status", "string")])),
            a(
                503,
                "Not ready: `migrations_pending` or `database_unreachable`",
                Shape::ApiError,
            ),
        ],
    },
    Operation {
        method: "GET",
        path: "/openapi.json",
        summary: "This document",
        access: Access::Public,
        body: &[],
        query: &[],
        answers: &[a(
            200,
            "OpenAPI 3.1",
            Shape::Object(&[("openapi", "string"), ("paths", "object")]),
        )],
    },
    Operation {
        method: "GET",
        path: "/metrics",
        summary: "Prometheus metrics (also without a token on LWA_BROKER_METRICS_LISTEN)",
        access: Access::Admin,
        body: &[],
        query: &[],
        answers: &[
            a(200, "Prometheus text format 0.0.4", Shape::Text),
            ADMIN_UNAUTHORIZED,
        ],
    },
    Operation {
        method: "GET",
        path: "/auth/initialize",
        summary: "Start onboarding (Data Border compatible): redirects the seller to Amazon's consent page",
        access: Access::Public,
        body: &[],
        query: &[
            ("state", true),
            ("tenantId", true),
            ("marketplace_region", true),
            ("amazonTokenSecret", true),
            ("sellerRedirectUrl", true),
        ],
        answers: &[
            a(302, "To the region's consent page", Shape::Redirect),
            a(400, "A parameter is missing or wrong", Shape::SeedError),
            a(
                429,
                "More than 5 requests in 10 s from this address",
                Shape::SeedError,
            ),
        ],
    },
    Operation {
        method: "GET",
        path: "/auth/redirect",
        summary: "Amazon's callback after consent",
        access: Access::Public,
        body: &[],
        query: &[
            ("state", true),
            ("spapi_oauth_code", false),
            ("code", false),
            ("selling_partner_id", false),
        ],
        answers: &[
            a(
                302,
                "To the tenant's redirect URL with a claim code or an error",
                Shape::Redirect,
            ),
            a(400, "Unknown, used or expired state", Shape::Html),
        ],
    },
    Operation {
        method: "GET",
        path: "/auth/login",
        summary: "Amazon's OAuth Login URI (Appstore-started authorizations, yearly renewal)",
        access: Access::Public,
        body: &[],
        query: &[("amazon_callback_uri", true), ("amazon_state", true)],
        answers: &[a(400, "Missing or unusable parameters", Shape::Html)],
    },
    Operation {
        method: "GET",
        path: "/auth/connect/{token}",
        summary: "Follow a connect or re-authorization link",
        access: Access::Public,
        body: &[],
        query: &[],
        answers: &[
            a(302, "To Amazon's consent page", Shape::Redirect),
            a(404, "No such link", Shape::Html),
        ],
    },
    Operation {
        method: "POST",
        path: "/api/claim-code",
        summary: "Claim a connection (Data Border compatible)",
        access: Access::CompatKey,
        body: &[
            ("code", "string", true),
            ("seller_id", "string", false),
            ("name", "string", false),
            ("callback_url", "string", false),
        ],
        query: &[],
        answers: &[
            a(
                200,
                "Claimed",
                Shape::Object(&[("success", "boolean"), ("data", "object")]),
            ),
            a(400, "Unknown, used or expired code", Shape::SeedError),
            a(401, "No valid API key", Shape::SeedError),
        ],
    },
    Operation {
        method: "POST",
        path: "/v1/claims",
        summary: "Claim a connection with the code the redirect carried",
        access: Access::TenantKey,
        body: &[
            ("code", "string", true),
            ("name", "string", false),
            ("callback_url", "string", false),
        ],
        query: &[],
        answers: &[
            a(
                200,
                "Claimed",
                Shape::Object(&[("connection", "object"), ("handle", "string")]),
            ),
            BAD_REQUEST,
            UNAUTHORIZED,
        ],
    },
    Operation {
        method: "POST",
        path: "/v1/connect-links",
        summary: "A consent link made server to server",
        access: Access::TenantKey,
        body: &[
            ("api", "string", false),
            ("region", "string", false),
            ("marketplace", "string", false),
            ("state", "string", true),
            ("redirect_url", "string", true),
            ("token_secret", "string", false),
        ],
        query: &[],
        answers: &[a(201, "The link", Shape::Object(LINK)), BAD_REQUEST, UNAUTHORIZED],
    },
    Operation {
        method: "GET",
        path: "/v1/connections",
        summary: "The tenant's connections, a page at a time",
        access: Access::TenantKey,
        body: &[],
        query: &[
            ("status", false),
            ("api", false),
            ("region", false),
            ("limit", false),
            ("after", false),
        ],
        answers: &[
            a(200, "A page", Shape::Object(PAGE_AFTER)),
            BAD_REQUEST,
            UNAUTHORIZED,
        ],
    },
    Operation {
        method: "POST",
        path: "/v1/connections/import",
        summary: "Import connections from refresh tokens (JSON lines)",
        access: Access::TenantKey,
        body: &[
            ("refresh_token", "string", true),
            ("api", "string", false),
            ("region", "string", false),
            ("selling_partner_id", "string", false),
        ],
        query: &[],
        answers: &[
            a(
                200,
                "At least one line imported; each line's result",
                Shape::Object(IMPORTED),
            ),
            a(
                400,
                "No line imported; each line's error",
                Shape::Object(IMPORTED),
            ),
            UNAUTHORIZED,
        ],
    },
    Operation {
        method: "GET",
        path: CONNECTION_ID,
        summary: "One connection",
        access: Access::TenantKey,
        body: &[],
        query: &[],
        answers: &[
            a(200, "The connection", Shape::Object(CONNECTION)),
            NOT_FOUND,
            UNAUTHORIZED,
        ],
    },
    Operation {
        method: "PATCH",
        path: CONNECTION_ID,
        summary: "Rename a connection or set its callback URL",
        access: Access::TenantKey,
        body: &[("name", "string", false), ("callback_url", "string", false)],
        query: &[],
        answers: &[
            a(200, "The connection", Shape::Object(CONNECTION)),
            BAD_REQUEST,
            NOT_FOUND,
        ],
    },
    Operation {
        method: "DELETE",
        path: CONNECTION_ID,
        summary: "Disconnect: forget the tokens",
        access: Access::TenantKey,
        body: &[],
        query: &[],
        answers: &[
            a(200, "The connection, disconnected", Shape::Object(CONNECTION)),
            NOT_FOUND,
        ],
    },
    Operation {
        method: "POST",
        path: "/v1/connections/{id}/reauthorize-link",
        summary: "A link that re-authorizes this connection",
        access: Access::TenantKey,
        body: &[
            ("redirect_url", "string", true),
            ("state", "string", false),
            ("token_secret", "string", false),
            ("expires_in", "integer", false),
        ],
        query: &[],
        answers: &[a(201, "The link", Shape::Object(LINK)), BAD_REQUEST, NOT_FOUND],
    },
    Operation {
        method: "POST",
        path: "/v1/connections/{id}/access-token",
        summary: "Vend the connection's access token",
        access: Access::TenantKey,
        body: &[],
        query: &[],
        answers: &[
            a(200, "A token", Shape::Object(TOKEN)),
            UNAUTHORIZED,
            NOT_FOUND,
            a(409, "`needs_reauth` or `disconnected`", Shape::ApiError),
        ],
    },
    Operation {
        method: "POST",
        path: "/v1/connections/{id}/restricted-data-token",
        summary: "A Restricted Data Token for restricted SP-API operations",
        access: Access::TenantKey,
        body: &[
            ("restrictedResources", "array", true),
            ("targetApplication", "string", false),
        ],
        query: &[],
        answers: &[
            a(
                200,
                "A token",
                Shape::Object(&[("restricted_data_token", "string"), ("expires_in", "integer")]),
            ),
            BAD_REQUEST,
            NOT_FOUND,
        ],
    },
    Operation {
        method: ANY,
        path: "/v1/connections/{id}/proxy/{path}",
        summary: "Call Amazon through the broker, any method",
        access: Access::TenantKey,
        body: &[],
        query: &[],
        answers: &[
            a(
                200,
                "Amazon's answer, passed through with its status and headers (an error of \
                 Amazon's too), plus `x-lwa-broker-token` saying which token was sent",
                Shape::Upstream,
            ),
            a(
                400,
                "A path that could leave Amazon's host (`..`, encoded slashes, an absolute URL)",
                Shape::ApiError,
            ),
            UNAUTHORIZED,
            NOT_FOUND,
            a(
                405,
                "A method the proxy does not forward (TRACE, CONNECT)",
                Shape::ApiError,
            ),
            a(409, "`needs_reauth` or `disconnected`", Shape::ApiError),
        ],
    },
    Operation {
        method: "POST",
        path: "/v1/grantless-tokens",
        summary: "A grantless token of the tenant's SP-API app",
        access: Access::TenantKey,
        body: &[("scope", "string", true)],
        query: &[],
        answers: &[a(200, "A token", Shape::Object(TOKEN)), BAD_REQUEST, UNAUTHORIZED],
    },
    Operation {
        method: "GET",
        path: "/v1/audit",
        summary: "The tenant's audit trail, newest first",
        access: Access::TenantKey,
        body: &[],
        query: &[
            ("connection_id", false),
            ("kind", false),
            ("limit", false),
            ("before", false),
        ],
        answers: &[
            a(200, "A page", Shape::Object(PAGE_BEFORE)),
            BAD_REQUEST,
            UNAUTHORIZED,
        ],
    },
    Operation {
        method: "GET",
        path: "/v1/webhook",
        summary: "The tenant's webhook",
        access: Access::TenantKey,
        body: &[],
        query: &[],
        answers: &[a(200, "The webhook", Shape::Object(WEBHOOK)), UNAUTHORIZED],
    },
    Operation {
        method: "PUT",
        path: "/v1/webhook",
        summary: "Set or clear the tenant's webhook URL",
        access: Access::TenantKey,
        body: &[("url", "string", false)],
        query: &[],
        answers: &[a(200, "The webhook", Shape::Object(WEBHOOK)), BAD_REQUEST],
    },
    Operation {
        method: "POST",
        path: "/v1/webhook/rotate-secret",
        summary: "A new signing secret, shown once",
        access: Access::TenantKey,
        body: &[],
        query: &[],
        answers: &[
            a(
                200,
                "The webhook and its new secret",
                Shape::Object(&[("signing_secret", "string"), ("signing_secret_set", "boolean")]),
            ),
            UNAUTHORIZED,
        ],
    },
    Operation {
        method: "GET",
        path: "/v1/webhook/deliveries",
        summary: "The tenant's webhook deliveries, newest first",
        access: Access::TenantKey,
        body: &[],
        query: &[("state", false), ("limit", false), ("before", false)],
        answers: &[a(200, "A page", Shape::Object(PAGE_BEFORE)), UNAUTHORIZED],
    },
    Operation {
        method: "POST",
        path: "/v1/webhook/deliveries/{delivery_id}/retry",
        summary: "Send a failed delivery again",
        access: Access::TenantKey,
        body: &[],
        query: &[],
        answers: &[
            a(404, "No such delivery for this tenant", Shape::ApiError),
            UNAUTHORIZED,
        ],
    },
    Operation {
        method: "POST",
        path: "/auth/o2/token",
        summary: "LWA-compatible token endpoint: `refresh_token` (the handle) or `client_credentials`",
        access: Access::LwaClient,
        body: &[
            ("grant_type", "string", true),
            ("refresh_token", "string", false),
            ("scope", "string", false),
            ("client_id", "string", false),
            ("client_secret", "string", false),
        ],
        query: &[],
        answers: &[
            a(
                200,
                "A token, as LWA answers",
                Shape::Object(&[
                    ("access_token", "string"),
                    ("token_type", "string"),
                    ("expires_in", "integer"),
                ]),
            ),
            a(
                400,
                "`invalid_request`, `unsupported_grant_type`, `invalid_grant`",
                Shape::LwaError,
            ),
            a(401, "`invalid_client`", Shape::LwaError),
        ],
    },
    Operation {
        method: "POST",
        path: "/admin/api/app-secret-notifications",
        summary: "Amazon's client-secret notifications, forwarded by the operator",
        access: Access::Admin,
        body: &[],
        query: &[],
        answers: &[ADMIN_UNAUTHORIZED],
    },
    Operation {
        method: "GET",
        path: "/admin/api/proxy/metrics",
        summary: "The proxy's counters as JSON",
        access: Access::Admin,
        body: &[],
        query: &[],
        answers: &[
            a(
                200,
                "The counters",
                Shape::Object(&[("operations", "array"), ("added_latency", "object")]),
            ),
            ADMIN_UNAUTHORIZED,
        ],
    },
];

fn shape_schema(shape: Shape) -> Option<Value> {
    let reference = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    match shape {
        Shape::ApiError => Some(reference("ApiError")),
        Shape::SeedError => Some(reference("SeedError")),
        Shape::LwaError => Some(reference("LwaError")),
        Shape::Object(fields) => Some(object_schema(fields.iter().map(|(n, t)| (*n, *t, true)))),
        Shape::Redirect | Shape::Text | Shape::Html | Shape::Upstream => None,
    }
}

fn type_schema(ty: &str) -> Value {
    match ty.strip_suffix('?') {
        Some(t) => json!({"type": [t, "null"]}),
        None => json!({"type": ty}),
    }
}

fn object_schema<'a>(fields: impl Iterator<Item = (&'a str, &'a str, bool)>) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for (name, ty, is_required) in fields {
        properties.insert(name.to_owned(), type_schema(ty));
        if is_required {
            required.push(json!(name));
        }
    }
    json!({"type": "object", "properties": properties, "required": required})
}

fn security(access: Access) -> Value {
    match access {
        Access::Public => json!([]),
        Access::TenantKey => json!([{"apiKey": []}]),
        Access::CompatKey => json!([{"apiKey": []}, {"compatKey": []}]),
        Access::LwaClient => json!([{"lwaClient": []}]),
        Access::Admin => json!([{"adminToken": []}]),
    }
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for op in OPERATIONS {
        let mut responses = Map::new();
        for answer in op.answers {
            let mut response = json!({"description": answer.description});
            let media = match answer.shape {
                Shape::Text => Some(("text/plain", json!({"type": "string"}))),
                Shape::Html => Some(("text/html", json!({"type": "string"}))),
                Shape::Upstream => Some(("*/*", json!({}))),
                Shape::Redirect => {
                    response["headers"] =
                        json!({"Location": {"schema": {"type": "string"}, "required": true}});
                    None
                }
                shape => shape_schema(shape).map(|s| ("application/json", s)),
            };
            if let Some((media, schema)) = media {
                response["content"] = json!({media: {"schema": schema}});
            }
            responses.insert(answer.status.to_string(), response);
        }
        let mut parameters: Vec<Value> = op
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        parameters.extend(op.query.iter().map(|(name, required)| {
            json!({"name": name, "in": "query", "required": required, "schema": {"type": "string"}})
        }));
        let mut operation = json!({
            "summary": op.summary,
            "operationId": format!("{} {}", op.method, op.path),
            "security": security(op.access),
            "responses": responses,
        });
        if !parameters.is_empty() {
            operation["parameters"] = Value::Array(parameters);
        }
        if !op.body.is_empty() {
            let media = if matches!(op.access, Access::LwaClient | Access::CompatKey) {
                "application/x-www-form-urlencoded"
            } else {
                "application/json"
            };
            let mut content = json!({media: {"schema": object_schema(op.body.iter().copied())}});
            if op.access == Access::CompatKey {
                content["application/json"] = content[media].clone();
            }
            operation["requestBody"] = json!({"required": true, "content": content});
        }
        let item = paths.entry(op.path.to_owned()).or_insert_with(|| json!({}));
        if op.method == ANY {
            operation["description"] = json!(PROXY_DESCRIPTION);
            for method in ANY_METHODS {
                let mut one = operation.clone();
                one["operationId"] = json!(format!("{method} {}", op.path));
                item[method.to_ascii_lowercase()] = one;
            }
        } else {
            item[op.method.to_ascii_lowercase()] = operation;
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "lwa-broker",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A Login with Amazon token broker: onboarding, connections, token vending.",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "ApiError": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                    }},
                },
                "SeedError": {
                    "type": "object",
                    "required": ["success", "error"],
                    "properties": {
                        "success": {"const": false},
                        "error": {
                            "type": "object",
                            "required": ["message"],
                            "properties": {"message": {"type": "string"}},
                        },
                    },
                },
                "LwaError": {
                    "type": "object",
                    "required": ["error", "error_description"],
                    "properties": {
                        "error": {"type": "string"},
                        "error_description": {"type": "string"},
                    },
                },
            },
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "A tenant's API key (lwak_…)"},
                "compatKey": {"type": "apiKey", "in": "header", "name": "x-adb-access-token"},
                "lwaClient": {"type": "http", "scheme": "basic", "description": "Key id and secret as LWA client credentials (or in the form body)"},
                "adminToken": {"type": "http", "scheme": "bearer", "description": "The operator's admin token (lwaadm_…)"},
            },
        },
    })
}

/// `GET /openapi.json`.
pub async fn route(State(_): State<AppState>) -> Response {
    axum::Json(document()).into_response()
}

//! Errors as responses: `{"error":{"code","message"}}` on `/v1`, the seed's
//! `{"success":false,"error":{"message"}}` on the compatible endpoints, and plain HTML pages
//! for browsers. Server-side failures are logged here, once, and answered without detail.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The `Retry-After` of a 503 `database_unavailable`, in seconds.
const DATABASE_RETRY_AFTER_S: &str = "5";

/// The shape an error is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `{"error":{"code","message"}}`
    V1,
    /// `{"success":false,"error":{"message"}}` (seed 003)
    Compat,
    /// An HTML page.
    Html,
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub shape: Shape,
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            shape: Shape::V1,
            headers: Vec::new(),
        }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    /// A failure on our side: logged with its cause, answered as 500 without detail.
    pub fn internal(context: &str, cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "{context}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the broker failed to complete the request; it has been logged",
        )
    }
    /// The database failed or could not be reached: 503 `database_unavailable` with
    /// `Retry-After`, worth retrying (the pool reconnects by itself once it is back).
    pub fn unavailable(context: &str, cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "{context}");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the broker's database is unavailable; try again in a few seconds",
        )
        .header(header::RETRY_AFTER, DATABASE_RETRY_AFTER_S)
    }
    pub fn shape(mut self, shape: Shape) -> ApiError {
        self.shape = shape;
        self
    }
    pub fn header(mut self, name: header::HeaderName, value: &str) -> ApiError {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((name, v));
        }
        self
    }
}

impl From<lwa_store::StoreError> for ApiError {
    fn from(e: lwa_store::StoreError) -> ApiError {
        match e {
            lwa_store::StoreError::Conflict(what) => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("already exists: {what}"),
            ),
            other => ApiError::unavailable("store call failed", other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = match self.shape {
            Shape::V1 => (
                self.status,
                axum::Json(json!({"error": {"code": self.code, "message": self.message}})),
            )
                .into_response(),
            Shape::Compat => (
                self.status,
                axum::Json(json!({"success": false, "error": {"message": self.message}})),
            )
                .into_response(),
            Shape::Html => (self.status, page("Something went wrong", &self.message)).into_response(),
        };
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// A minimal, escaped HTML page.
pub fn page(title: &str, message: &str) -> axum::response::Html<String> {
    let title = html_escape::encode_text(title);
    let message = html_escape::encode_text(message);
    axum::response::Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <meta name=\"viewport\" content=\"width=device-width\"></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\">\
         <h1>{title}</h1><p>{message}</p></body></html>"
    ))
}

/// Whether the client prefers an HTML page (a browser) to JSON.
pub fn wants_html(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    accept.contains("text/html") && !accept.starts_with("application/json")
}

//! The library against `fake-amazon`, over HTTP.

mod support;

mod api_calls;
mod errors;
mod grants;
mod refresh;

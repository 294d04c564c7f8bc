//! The server over HTTP against the fake Amazon: one test binary, a module per capability.

mod support;

mod bad_input;
mod browser;
mod connections;
mod dashboard;
mod isolation;
mod leaks;
mod onboarding;
mod ops;
mod proxy;
mod python_sdk;
mod refresher;
mod secrets;
mod vending;
mod webhooks;

//! The fake Amazon's behaviour, over HTTP, against a `FakeAmazon::start()`ed server.

mod ads;
mod appstore;
mod binary;
mod consent;
mod control;
mod faults;
mod lwa;
mod proxy;
mod sandbox;
mod sp_api;
mod support;

//! The `lwa-broker` CLI end to end, as a user runs it, against a fake Amazon over HTTP.

mod cluster;
mod support;

mod accounts;
mod coherence;
mod login;
mod migrate;
mod readme;
mod replicas;
mod replicas_restart;
mod replicas_webhooks;
mod rotate;
mod secrets;
mod server;
mod store_copy;
mod storm;
mod webhooks;

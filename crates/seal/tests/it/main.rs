//! The one integration-test binary of lwa-seal. `crash` and `concurrency` re-run this binary as
//! child processes (see `support::run_child`).

mod concurrency;
mod crash;
mod file;
mod keys;
mod sealing;
mod support;

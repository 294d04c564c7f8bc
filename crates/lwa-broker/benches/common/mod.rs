//! Helpers every bench of this directory shares: knobs from the environment, medians, the
//! machine's CPU time, and a minimal HTTP/1.1 client connection (`http`). Each bench uses part of them.
#![allow(dead_code)]

use std::str::FromStr;

pub mod http;

/// The knob `name` from the environment, else `default`; a value that does not parse stops the
/// bench with the knob's name.
pub fn knob<T: FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a valid value")),
        Err(_) => default,
    }
}

/// The median (the mean of the middle two for an even count); NaN for none.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `median (min–max)`; `—` for none.
pub fn spread(values: &[f64], decimals: usize) -> String {
    if values.is_empty() {
        return "—".to_owned();
    }
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{:.d$} ({:.d$}–{:.d$})", median(values), min, max, d = decimals)
}

/// Busy and stolen CPU seconds of the whole machine so far (`/proc/stat`).
pub fn machine_seconds(clock_ticks: f64) -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    let at = |i: usize| ticks.get(i).copied().unwrap_or(0.0);
    // user nice system idle iowait irq softirq steal …
    let busy = at(0) + at(1) + at(2) + at(5) + at(6);
    (busy / clock_ticks, at(7) / clock_ticks)
}

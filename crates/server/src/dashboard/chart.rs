//! The overview's chart: LWA calls per hour over the last 24 hours, stacked by outcome, as
//! numbers the template draws into SVG (no script). Colours from the Okabe–Ito palette, which
//! stays distinguishable under the common colour-blindnesses; each outcome also has a legend
//! and every bar a `<title>`, and the same numbers are in a table beside it.

use super::calls::HourCounts;

/// Outcome groups, in stacking order, with their colour.
pub const OUTCOMES: [(&str, &str, &str); 4] = [
    ("ok", "succeeded", "#0072B2"),
    ("reauth", "seller must re-authorize (invalid_grant)", "#E69F00"),
    ("error", "other LWA error", "#D55E00"),
    ("fault", "no answer / 5xx", "#CC79A7"),
];

/// The group of an outcome.
pub fn group(outcome: &str) -> usize {
    match outcome {
        "ok" => 0,
        "invalid_grant" => 1,
        "fault" => 3,
        _ => 2,
    }
}

/// Plot geometry (SVG user units).
pub const WIDTH: i64 = 720;
pub const HEIGHT: i64 = 260;
const LEFT: i64 = 48;
const RIGHT: i64 = 12;
const TOP: i64 = 12;
const BOTTOM: i64 = 40;

/// One stacked segment.
#[derive(Debug, Clone)]
pub struct Segment {
    pub x: i64,
    pub y: i64,
    pub width: i64,
    pub height: i64,
    pub fill: &'static str,
    pub title: String,
}

/// An axis label.
#[derive(Debug, Clone)]
pub struct Tick {
    pub x: i64,
    pub y: i64,
    pub label: String,
}

/// What the template draws.
#[derive(Debug, Clone)]
pub struct Chart {
    pub segments: Vec<Segment>,
    pub x_ticks: Vec<Tick>,
    pub y_ticks: Vec<Tick>,
    pub plot_left: i64,
    pub plot_bottom: i64,
    pub plot_right: i64,
    pub plot_top: i64,
    pub total: u64,
}

/// Lays out `hours` (oldest first, from [`super::calls::LwaCallLog::last_24_hours`]).
pub fn layout(hours: &[(i64, HourCounts)]) -> Chart {
    let per_hour: Vec<(i64, [u64; 4])> = hours
        .iter()
        .map(|(start, counts)| {
            let mut g = [0u64; 4];
            for ((_, outcome), n) in counts {
                g[group(outcome)] += n;
            }
            (*start, g)
        })
        .collect();
    let max = per_hour
        .iter()
        .map(|(_, g)| g.iter().sum::<u64>())
        .max()
        .unwrap_or(0);
    let scale_max = nice_ceiling(max.max(1));
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let slot = plot_w / per_hour.len().max(1) as i64;
    let bar_w = (slot * 3 / 4).max(1);
    let mut segments = Vec::new();
    let mut x_ticks = Vec::new();
    let mut total = 0;
    for (i, (start, g)) in per_hour.iter().enumerate() {
        let x = LEFT + i as i64 * slot + (slot - bar_w) / 2;
        let mut base = 0u64;
        let hour = &crate::time::rfc3339(*start)[11..13];
        for (k, n) in g.iter().enumerate() {
            if *n == 0 {
                continue;
            }
            let y0 = TOP + plot_h - (base * plot_h as u64 / scale_max) as i64;
            let y1 = TOP + plot_h - ((base + n) * plot_h as u64 / scale_max) as i64;
            segments.push(Segment {
                x,
                y: y1,
                width: bar_w,
                height: (y0 - y1).max(1),
                fill: OUTCOMES[k].2,
                title: format!("{hour}:00 UTC: {n} {}", OUTCOMES[k].1),
            });
            base += n;
            total += n;
        }
        if i % 3 == 0 {
            x_ticks.push(Tick {
                x: x + bar_w / 2,
                y: HEIGHT - BOTTOM + 16,
                label: format!("{hour}:00"),
            });
        }
    }
    let y_ticks = (0..=4)
        .map(|i| Tick {
            x: LEFT - 6,
            y: TOP + plot_h - plot_h * i / 4 + 4,
            label: (scale_max * i as u64 / 4).to_string(),
        })
        .collect();
    Chart {
        segments,
        x_ticks,
        y_ticks,
        plot_left: LEFT,
        plot_bottom: TOP + plot_h,
        plot_right: WIDTH - RIGHT,
        plot_top: TOP,
        total,
    }
}

/// The smallest of 4, 8, 20, 40, 80, 200, … at or above `n` (so the four gridlines are whole).
fn nice_ceiling(n: u64) -> u64 {
    let mut step = 1u64;
    loop {
        for m in [4, 8, 20] {
            if m * step >= n {
                return m * step;
            }
        }
        step *= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_stack_by_outcome_and_scale_to_a_round_maximum() {
        let mut hours: Vec<(i64, HourCounts)> = (0..24).map(|h| (h * 3_600_000, HourCounts::new())).collect();
        hours[23].1.insert(("refresh_token", "ok".into()), 5);
        hours[23].1.insert(("refresh_token", "invalid_grant".into()), 1);
        let chart = layout(&hours);
        assert_eq!(chart.total, 6);
        assert_eq!(chart.segments.len(), 2);
        assert_eq!(chart.y_ticks.last().unwrap().label, "8");
        assert_eq!(chart.segments[0].fill, "#0072B2");
        assert_eq!(nice_ceiling(9), 20);
        assert_eq!(nice_ceiling(41), 80);
    }
}

//! Small pieces the pages share: times as people read them, URLs, release names
//! without their app, and the geometry of the inline SVG charts.

/// A time shown as "3 h ago", with the exact RFC 3339 time for `<time datetime>`.
pub struct When {
    pub iso: String,
    pub ago: String,
}

impl When {
    pub fn new(rfc3339: &str, now_ms: i64) -> Self {
        let ago =
            time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
                .map(|t| ago(now_ms - crate::store::unix_ms(t)))
                .unwrap_or_else(|_| rfc3339.to_owned());
        When {
            iso: rfc3339.to_owned(),
            ago,
        }
    }
}

fn ago(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        s if s < 0 => "just now".to_owned(),
        s if s < 60 => format!("{s} s ago"),
        s if s < 3600 => format!("{} min ago", s / 60),
        s if s < 86_400 => format!("{} h ago", s / 3600),
        s if s < 60 * 86_400 => format!("{} d ago", s / 86_400),
        s => format!("{} mo ago", s / (30 * 86_400)),
    }
}

/// `path?k=v&…` with the empty values left out; percent-encoded, not yet HTML-escaped
/// (the template escapes it).
pub fn query_url(path: &str, pairs: &[(&str, &str)]) -> String {
    let kept: Vec<(&str, &str)> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .copied()
        .collect();
    match serde_urlencoded::to_string(&kept) {
        Ok(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path.to_owned(),
    }
}

/// One path segment, percent-encoded (a release name holds spaces and parentheses).
pub use crate::util::percent_encode as path_segment;

/// A release as a group of `app` shows it: `1.2 (42)` rather than `com.app 1.2 (42)`.
pub fn short_release(name: &str, app: &str) -> String {
    match name
        .strip_prefix(app)
        .and_then(|rest| rest.strip_prefix(' '))
    {
        Some(rest) if !app.is_empty() => rest.to_owned(),
        _ => name.to_owned(),
    }
}

/// The first hour (since the epoch) of the `days` UTC calendar days ending today: where
/// a chart's hourly counts start.
pub fn first_hour(now_hour: i64, days: i64) -> i64 {
    (now_hour.div_euclid(24) - (days - 1)) * 24
}

/// Crashes per UTC calendar day over the last `days` days (today last, so far), from
/// hourly counts: each bar is the day its label names.
fn per_day(hours: &[(i64, u64)], now_hour: i64, days: i64) -> Vec<u64> {
    let mut out = vec![0u64; days as usize];
    let today = now_hour.div_euclid(24);
    for (hour, n) in hours {
        let back = today - hour.div_euclid(24);
        if (0..days).contains(&back) {
            out[(days - 1 - back) as usize] += n;
        }
    }
    out
}

/// One bar of a chart, in SVG user units.
pub struct Bar {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    pub label: String,
}

/// A table row's 14-day sparkline.
pub struct Spark {
    pub width: u32,
    pub height: u32,
    pub bars: Vec<Bar>,
    pub label: String,
}

/// A bar's height for `n` out of `max`, in `height` units: a day with crashes shows at
/// least one unit, so it never looks empty.
fn bar_height(n: u64, max: u64, height: u32) -> u32 {
    if n == 0 {
        0
    } else {
        ((n * u64::from(height)).div_ceil(max.max(1)) as u32).clamp(1, height)
    }
}

const SPARK_BAR: u32 = 5;
const SPARK_HEIGHT: u32 = 20;

pub fn sparkline(hours: &[(i64, u64)], now_hour: i64, days: i64) -> Spark {
    let counts = per_day(hours, now_hour, days);
    let max = counts.iter().copied().max().unwrap_or(0).max(1);
    let total: u64 = counts.iter().sum();
    Spark {
        width: SPARK_BAR * counts.len() as u32,
        height: SPARK_HEIGHT,
        bars: counts
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let h = bar_height(n, max, SPARK_HEIGHT);
                Bar {
                    x: i as u32 * SPARK_BAR,
                    y: SPARK_HEIGHT - h,
                    width: SPARK_BAR - 1,
                    height: h,
                    label: match counts.len() - 1 - i {
                        0 => format!("today: {n}"),
                        1 => format!("yesterday: {n}"),
                        back => format!("{back} days ago: {n}"),
                    },
                }
            })
            .collect(),
        label: format!("{total} crashes in the last {days} days"),
    }
}

/// A group page's crashes-per-day chart with its axis.
pub struct DayChart {
    pub width: u32,
    pub height: u32,
    pub bars: Vec<Bar>,
    pub max: u64,
    pub total: u64,
    pub first_label: String,
    pub last_label: String,
}

const DAY_BAR: u32 = 20;
const DAY_HEIGHT: u32 = 80;

pub fn day_chart(hours: &[(i64, u64)], now_hour: i64, days: i64) -> DayChart {
    let counts = per_day(hours, now_hour, days);
    let max = counts.iter().copied().max().unwrap_or(0);
    let day_name = |back: i64| {
        time::OffsetDateTime::from_unix_timestamp((now_hour.div_euclid(24) - back) * 86_400)
            .map(|t| format!("{} {}", t.month(), t.day()))
            .unwrap_or_default()
    };
    DayChart {
        width: DAY_BAR * counts.len() as u32,
        height: DAY_HEIGHT,
        bars: counts
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let h = bar_height(n, max, DAY_HEIGHT);
                let back = counts.len() as i64 - 1 - i as i64;
                Bar {
                    x: i as u32 * DAY_BAR,
                    y: DAY_HEIGHT - h,
                    width: DAY_BAR - 3,
                    height: h,
                    label: format!("{}: {n} crashes", day_name(back)),
                }
            })
            .collect(),
        max,
        total: counts.iter().sum(),
        first_label: day_name(days - 1),
        last_label: "today".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_calendar_days() {
        // 02:00 on day 100: today so far holds hours 2400..=2402.
        let now = 100 * 24 + 2;
        let hours = [
            (now, 2),
            (now - 2, 3),
            (now - 3, 5),
            (now - 27, 1),
            (87 * 24 - 1, 7),
        ];
        let days = per_day(&hours, now, 14);
        assert_eq!(days[13], 5, "today: 00:00 and 02:00");
        assert_eq!(days[12], 5, "yesterday 23:00");
        assert_eq!(days[11], 1, "the day before");
        assert_eq!(
            days.iter().sum::<u64>(),
            11,
            "older than 14 days is left out"
        );
        assert_eq!(first_hour(now, 14), 87 * 24);
    }

    #[test]
    fn urls_encode_and_drop_empty_values() {
        assert_eq!(
            query_url(
                "/",
                &[("release", "com.a 1.0 (1)"), ("q", ""), ("x", "a&b<")]
            ),
            "/?release=com.a+1.0+%281%29&x=a%26b%3C"
        );
        assert_eq!(query_url("/", &[("q", "")]), "/");
        assert_eq!(path_segment("com.a 1.0 (1)/x"), "com.a%201.0%20%281%29%2Fx");
    }

    #[test]
    fn releases_drop_their_app() {
        assert_eq!(short_release("com.a 1.0 (1)", "com.a"), "1.0 (1)");
        assert_eq!(short_release("com.b 1.0 (1)", "com.a"), "com.b 1.0 (1)");
        assert_eq!(short_release("1.0", ""), "1.0");
    }
}

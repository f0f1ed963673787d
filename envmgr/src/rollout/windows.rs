//! Deploy windows: the times of the week a channel's rollout may start or advance, in a time
//! zone of the team's choosing (`[[repo.channel]] windows = [...]`).
//!
//! A window is written in TOML as
//! `{ days = ["mon", "tue", "wed", "thu", "fri"], start = "09:00", end = "17:00", tz = "Europe/Berlin" }`:
//!
//! - `days` (optional, every day when left out) are the days the window *opens* on;
//! - `start` and `end` are local times of day (`HH:MM` or `HH:MM:SS`; `end` may be `24:00`);
//!   an `end` before `start` crosses midnight (a window `fri 22:00`–`02:00` is open until
//!   Saturday 02:00); an `end` equal to `start` means a whole day from `start`;
//! - `tz` is an IANA time zone (default `UTC`), looked up in the system's zoneinfo and, where
//!   that is missing or lacks the zone, in the copy of the time zone database built in.
//!
//! Local times are compared on the wall clock of the window's zone, so a 09:00 opening stays
//! at 09:00 across daylight-saving changes. An opening that falls into a spring-forward gap
//! happens when the gap ends.
//!
//! `window_check` is pure apart from the time zone lookup done when a window is read: it is
//! given `now`, so the reconciler and tests decide what time it is.

use std::fmt;
use std::sync::OnceLock;
use std::time::SystemTime;

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::{AmbiguousOffset, TimeZone, TimeZoneDatabase};
use jiff::{Timestamp, ToSpan as _, Zoned};
use serde::{Deserialize, Serialize};

/// One allowed deploy time of the week.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(try_from = "WindowSpec", into = "WindowSpec")]
pub struct DeployWindow {
    /// The days the window opens on, Monday first; never empty (all seven when not given).
    pub days: Vec<Weekday>,
    /// Local opening time.
    pub start: Time,
    /// Local closing time; before `start` when the window crosses midnight, equal to it for a
    /// whole day.
    pub end: Time,
    /// The zone `start` and `end` are read in.
    pub tz: TimeZone,
}

/// The TOML shape of a window.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct WindowSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    days: Option<Vec<String>>,
    start: String,
    end: String,
    #[serde(default = "utc_name")]
    tz: String,
}

fn utc_name() -> String {
    "UTC".to_string()
}

const WEEK: [Weekday; 7] = [
    Weekday::Monday,
    Weekday::Tuesday,
    Weekday::Wednesday,
    Weekday::Thursday,
    Weekday::Friday,
    Weekday::Saturday,
    Weekday::Sunday,
];

impl TryFrom<WindowSpec> for DeployWindow {
    type Error = String;

    fn try_from(spec: WindowSpec) -> Result<Self, String> {
        let days = match spec.days {
            None => WEEK.to_vec(),
            Some(names) if names.is_empty() => {
                return Err("deploy window: `days` is empty; leave it out for every day".to_string())
            }
            Some(names) => {
                let mut days = names
                    .iter()
                    .map(|name| parse_day(name))
                    .collect::<Result<Vec<_>, _>>()?;
                days.sort_by_key(|day| day.to_monday_zero_offset());
                days.dedup();
                days
            }
        };
        Ok(DeployWindow {
            days,
            start: parse_time_of_day("start", &spec.start, false)?,
            end: parse_time_of_day("end", &spec.end, true)?,
            tz: lookup_time_zone(&spec.tz)?,
        })
    }
}

impl From<DeployWindow> for WindowSpec {
    fn from(window: DeployWindow) -> Self {
        WindowSpec {
            days: (window.days.len() < 7).then(|| {
                window
                    .days
                    .iter()
                    .map(|d| day_name(*d).to_string())
                    .collect()
            }),
            start: hh_mm(window.start),
            end: hh_mm(window.end),
            tz: zone_name(&window.tz).to_string(),
        }
    }
}

impl DeployWindow {
    /// Whether the window is open at `at` (read on the wall clock of the window's zone).
    pub fn is_open(&self, at: Timestamp) -> bool {
        let local = at.to_zoned(self.tz.clone());
        let (day, time) = (local.weekday(), local.time());
        let opens_on = |d: Weekday| self.days.contains(&d);
        if self.start < self.end {
            opens_on(day) && self.start <= time && time < self.end
        } else {
            // Crosses midnight (or lasts a whole day when start == end): open from `start` on
            // an opening day, and before `end` on the day after one.
            (opens_on(day) && time >= self.start) || (opens_on(day.previous()) && time < self.end)
        }
    }

    /// The first opening strictly after `after`, looking one week ahead.
    pub fn next_opening(&self, after: Timestamp) -> Option<Zoned> {
        let today: Date = after.to_zoned(self.tz.clone()).date();
        (0..=7i64)
            .filter_map(|offset| today.checked_add(offset.days()).ok())
            .filter(|date| self.days.contains(&date.weekday()))
            .filter_map(|date| self.opening_on(date))
            .find(|opening| opening.timestamp() > after)
    }

    /// The instant the window opens on `date`. An opening inside a spring-forward gap (02:30
    /// on a night that skips from 02:00 to 03:00) happens when the gap ends, the first instant
    /// the wall clock reads later than `start`: that is when `is_open` turns true.
    fn opening_on(&self, date: Date) -> Option<Zoned> {
        let ambiguous = self.tz.to_ambiguous_zoned(date.to_datetime(self.start));
        let is_gap = matches!(ambiguous.offset(), AmbiguousOffset::Gap { .. });
        let shifted = ambiguous.compatible().ok()?;
        if !is_gap {
            return Some(shifted);
        }
        // `compatible` moved the time forward by the gap's length; the transition just
        // before it is the end of the gap.
        let gap_end = self.tz.preceding(shifted.timestamp()).next()?.timestamp();
        Some(gap_end.to_zoned(self.tz.clone()))
    }
}

impl fmt::Display for DeployWindow {
    /// `mon,tue,wed,thu,fri 09:00-17:00 Europe/Berlin` (`daily` for every day).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.days.len() == 7 {
            f.write_str("daily")?;
        } else {
            let names: Vec<&str> = self.days.iter().map(|d| day_name(*d)).collect();
            f.write_str(&names.join(","))?;
        }
        write!(
            f,
            " {}-{} {}",
            hh_mm(self.start),
            hh_mm(self.end),
            zone_name(&self.tz)
        )
    }
}

/// `Ok(())` when a rollout may start or advance at `now`: no windows configured, or `now` is
/// inside at least one. Otherwise why not, with the next opening, e.g.
/// `outside the deploy windows (next opens Mon 09:00 Europe/Berlin)`.
pub fn window_check(windows: &[DeployWindow], now: SystemTime) -> Result<(), String> {
    if windows.is_empty() {
        return Ok(());
    }
    let Ok(now) = Timestamp::try_from(now) else {
        return Err("outside the deploy windows (the clock is out of range)".to_string());
    };
    if windows.iter().any(|w| w.is_open(now)) {
        return Ok(());
    }
    Err(match earliest_opening(windows, now) {
        Some(opening) => format!(
            "outside the deploy windows (next opens {} {})",
            opening.strftime("%a %H:%M"),
            zone_name(opening.time_zone())
        ),
        None => "outside the deploy windows".to_string(),
    })
}

/// When the earliest of the windows opens next after `now`, so a blocked rollout can be
/// looked at again then; `None` without windows.
pub fn next_window_opening(windows: &[DeployWindow], now: SystemTime) -> Option<SystemTime> {
    let now = Timestamp::try_from(now).ok()?;
    earliest_opening(windows, now).map(|z| SystemTime::from(z.timestamp()))
}

fn earliest_opening(windows: &[DeployWindow], now: Timestamp) -> Option<Zoned> {
    windows
        .iter()
        .filter_map(|w| w.next_opening(now))
        .min_by_key(|z| z.timestamp())
}

fn parse_day(name: &str) -> Result<Weekday, String> {
    let lower = name.trim().to_ascii_lowercase();
    WEEK.iter()
        .copied()
        .find(|day| {
            let short = day_name(*day);
            lower == short || lower == full_day_name(*day)
        })
        .ok_or_else(|| {
            format!("deploy window: unknown day {name:?} (use mon, tue, wed, thu, fri, sat or sun)")
        })
}

fn day_name(day: Weekday) -> &'static str {
    &full_day_name(day)[..3]
}

fn full_day_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Monday => "monday",
        Weekday::Tuesday => "tuesday",
        Weekday::Wednesday => "wednesday",
        Weekday::Thursday => "thursday",
        Weekday::Friday => "friday",
        Weekday::Saturday => "saturday",
        Weekday::Sunday => "sunday",
    }
}

/// `HH:MM` or `HH:MM:SS` on a 24-hour clock; `24:00` only where `allow_midnight_end` (it is
/// read as 00:00, which as an end means "until midnight").
fn parse_time_of_day(field: &str, text: &str, allow_midnight_end: bool) -> Result<Time, String> {
    let bad = || {
        format!(
            "deploy window: {field} {text:?} is not a time of day (write HH:MM on a 24-hour \
             clock, e.g. \"09:00\")"
        )
    };
    let parts: Vec<&str> = text.trim().split(':').collect();
    if !(2..=3).contains(&parts.len())
        || parts
            .iter()
            .any(|p| p.len() != 2 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad());
    }
    let number = |i: usize| parts.get(i).map_or(Ok(0), |p| p.parse::<i8>());
    let (hour, minute, second) = (
        number(0).map_err(|_| bad())?,
        number(1).map_err(|_| bad())?,
        number(2).map_err(|_| bad())?,
    );
    if allow_midnight_end && hour == 24 && minute == 0 && second == 0 {
        return Ok(Time::midnight());
    }
    Time::new(hour, minute, second, 0).map_err(|_| bad())
}

/// Looks a zone up in the system's zoneinfo, then in the built-in copy (a machine without
/// `/usr/share/zoneinfo`, or with an older one lacking the zone).
fn lookup_time_zone(name: &str) -> Result<TimeZone, String> {
    let name = name.trim();
    if name.eq_ignore_ascii_case("UTC") {
        return Ok(TimeZone::UTC);
    }
    static BUNDLED: OnceLock<TimeZoneDatabase> = OnceLock::new();
    jiff::tz::db()
        .get(name)
        .or_else(|_| BUNDLED.get_or_init(TimeZoneDatabase::bundled).get(name))
        .map_err(|e| {
            format!(
                "deploy window: unknown time zone {name:?} (use an IANA name such as \
                 \"Europe/Berlin\" or \"UTC\"): {e}"
            )
        })
}

fn zone_name(tz: &TimeZone) -> &str {
    tz.iana_name().unwrap_or("UTC")
}

fn hh_mm(time: Time) -> String {
    if time.second() == 0 {
        format!("{:02}:{:02}", time.hour(), time.minute())
    } else {
        format!(
            "{:02}:{:02}:{:02}",
            time.hour(),
            time.minute(),
            time.second()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads one window from its TOML shape (what `[[repo.channel]] windows` holds).
    fn parse_toml(text: &str) -> Result<DeployWindow, String> {
        // A bare inline table is not a TOML document; wrap it as one key.
        #[derive(Deserialize)]
        struct Wrapper {
            window: DeployWindow,
        }
        toml::from_str::<Wrapper>(&format!("window = {text}"))
            .map(|w| w.window)
            .map_err(|e| e.message().to_string())
    }

    fn window(text: &str) -> DeployWindow {
        parse_toml(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    /// A wall-clock time in a zone, as the SystemTime the reconciler would pass.
    fn at(local: &str, tz: &str) -> SystemTime {
        let zoned: Zoned = format!("{local}[{tz}]").parse().expect("valid zoned time");
        SystemTime::from(zoned.timestamp())
    }

    fn utc(instant: &str) -> SystemTime {
        SystemTime::from(instant.parse::<Timestamp>().expect("valid instant"))
    }

    #[test]
    fn office_hours_in_berlin() {
        let windows = [window(
            r#"{ days = ["mon","tue","wed","thu","fri"], start = "09:00", end = "17:00", tz = "Europe/Berlin" }"#,
        )];
        // 2024-03-08 is a Friday.
        assert_eq!(
            window_check(&windows, at("2024-03-08T09:00", "Europe/Berlin")),
            Ok(())
        );
        assert_eq!(
            window_check(&windows, at("2024-03-08T16:59:59", "Europe/Berlin")),
            Ok(())
        );
        assert_eq!(
            window_check(&windows, at("2024-03-08T17:00", "Europe/Berlin")),
            Err("outside the deploy windows (next opens Mon 09:00 Europe/Berlin)".to_string())
        );
        assert_eq!(
            window_check(&windows, at("2024-03-09T12:00", "Europe/Berlin")),
            Err("outside the deploy windows (next opens Mon 09:00 Europe/Berlin)".to_string())
        );
        assert_eq!(
            window_check(&windows, at("2024-03-11T08:59", "Europe/Berlin")),
            Err("outside the deploy windows (next opens Mon 09:00 Europe/Berlin)".to_string())
        );
        // 08:30 UTC on a winter Friday is 09:30 in Berlin.
        assert_eq!(window_check(&windows, utc("2024-03-08T08:30:00Z")), Ok(()));
        assert!(window_check(&windows, utc("2024-03-08T07:30:00Z")).is_err());
        assert_eq!(
            next_window_opening(&windows, at("2024-03-08T18:00", "Europe/Berlin")),
            Some(at("2024-03-11T09:00", "Europe/Berlin"))
        );
    }

    #[test]
    fn no_windows_always_allows() {
        assert_eq!(window_check(&[], SystemTime::now()), Ok(()));
        assert_eq!(next_window_opening(&[], SystemTime::now()), None);
    }

    #[test]
    fn defaults_are_every_day_and_utc() {
        let w = window(r#"{ start = "09:00", end = "10:00" }"#);
        assert_eq!(w.days.len(), 7);
        assert_eq!(w.tz, TimeZone::UTC);
        assert_eq!(w.to_string(), "daily 09:00-10:00 UTC");
        assert!(window_check(std::slice::from_ref(&w), utc("2024-06-15T09:30:00Z")).is_ok());
        assert_eq!(
            window_check(&[w], utc("2024-06-15T10:00:00Z")),
            Err("outside the deploy windows (next opens Sun 09:00 UTC)".to_string())
        );
    }

    #[test]
    fn crossing_midnight_belongs_to_the_opening_day() {
        let windows = [window(
            r#"{ days = ["fri"], start = "22:00", end = "02:00", tz = "America/New_York" }"#,
        )];
        let tz = "America/New_York";
        assert!(window_check(&windows, at("2024-05-03T21:59", tz)).is_err()); // Friday
        assert!(window_check(&windows, at("2024-05-03T22:00", tz)).is_ok());
        assert!(window_check(&windows, at("2024-05-04T01:59", tz)).is_ok()); // Saturday
        assert!(window_check(&windows, at("2024-05-04T02:00", tz)).is_err());
        // Friday 00:30 follows a Thursday: the window did not open the night before.
        assert_eq!(
            window_check(&windows, at("2024-05-03T00:30", tz)),
            Err("outside the deploy windows (next opens Fri 22:00 America/New_York)".to_string())
        );
    }

    #[test]
    fn whole_days_and_an_end_of_24_00() {
        let weekend = [window(
            r#"{ days = ["sat", "Sunday"], start = "00:00", end = "24:00" }"#,
        )];
        assert!(window_check(&weekend, utc("2024-05-04T00:00:00Z")).is_ok());
        assert!(window_check(&weekend, utc("2024-05-05T23:59:59Z")).is_ok());
        assert!(window_check(&weekend, utc("2024-05-06T00:00:00Z")).is_err());
        assert!(window_check(&weekend, utc("2024-05-03T23:59:59Z")).is_err());
        let evening = [window(r#"{ start = "18:00", end = "24:00" }"#)];
        assert!(window_check(&evening, utc("2024-05-04T23:59:00Z")).is_ok());
        assert!(window_check(&evening, utc("2024-05-05T00:00:00Z")).is_err());
    }

    #[test]
    fn daylight_saving_keeps_the_wall_clock() {
        let windows = [window(
            r#"{ start = "09:00", end = "17:00", tz = "Europe/Berlin" }"#,
        )];
        // Berlin is UTC+1 before 2024-03-31 and UTC+2 after: 09:00 local moves by an hour in UTC.
        assert!(window_check(&windows, utc("2024-03-30T08:00:00Z")).is_ok());
        assert!(window_check(&windows, utc("2024-03-31T07:30:00Z")).is_ok());
        assert!(window_check(&windows, utc("2024-03-31T06:30:00Z")).is_err());
        assert!(window_check(&windows, utc("2024-03-30T07:30:00Z")).is_err());
        assert_eq!(
            next_window_opening(&windows, utc("2024-03-30T20:00:00Z")),
            Some(utc("2024-03-31T07:00:00Z"))
        );
    }

    #[test]
    fn opening_inside_the_spring_forward_gap() {
        // 02:00-03:00 does not exist in Berlin on 2024-03-31: the window opens at 03:00 CEST.
        let windows = [window(
            r#"{ start = "02:30", end = "04:00", tz = "Europe/Berlin" }"#,
        )];
        assert_eq!(
            next_window_opening(&windows, utc("2024-03-30T23:00:00Z")),
            Some(utc("2024-03-31T01:00:00Z"))
        );
        assert!(window_check(&windows, utc("2024-03-31T01:00:00Z")).is_ok()); // 03:00 CEST
        assert!(window_check(&windows, utc("2024-03-31T00:59:00Z")).is_err()); // 01:59 CET
                                                                               // On the autumn night 02:30 happens twice; both are inside.
        assert!(window_check(&windows, utc("2024-10-27T00:30:00Z")).is_ok()); // 02:30 CEST
        assert!(window_check(&windows, utc("2024-10-27T01:30:00Z")).is_ok()); // 02:30 CET
    }

    #[test]
    fn the_earliest_of_several_windows_is_named() {
        let windows = [
            window(r#"{ days = ["mon"], start = "09:00", end = "10:00", tz = "Europe/Berlin" }"#),
            window(
                r#"{ days = ["sun"], start = "20:00", end = "21:00", tz = "America/Los_Angeles" }"#,
            ),
        ];
        // Saturday noon UTC: Sunday 20:00 in LA is Monday 03:00 UTC, before Monday 08:00 UTC.
        assert_eq!(
            window_check(&windows, utc("2024-05-04T12:00:00Z")),
            Err(
                "outside the deploy windows (next opens Sun 20:00 America/Los_Angeles)".to_string()
            )
        );
        assert!(window_check(&windows, utc("2024-05-06T07:30:00Z")).is_ok());
    }

    #[test]
    fn bad_values_are_named() {
        let err =
            parse_toml(r#"{ start = "09:00", end = "17:00", tz = "Europe/Berln" }"#).unwrap_err();
        assert!(err.contains("unknown time zone \"Europe/Berln\""), "{err}");
        let err = parse_toml(r#"{ start = "9am", end = "17:00" }"#).unwrap_err();
        assert!(err.contains("start \"9am\" is not a time of day"), "{err}");
        let err = parse_toml(r#"{ start = "09:00", end = "25:00" }"#).unwrap_err();
        assert!(err.contains("end \"25:00\""), "{err}");
        let err = parse_toml(r#"{ start = "24:00", end = "10:00" }"#).unwrap_err();
        assert!(err.contains("start \"24:00\""), "{err}");
        let err =
            parse_toml(r#"{ days = ["mon", "mnd"], start = "09:00", end = "17:00" }"#).unwrap_err();
        assert!(err.contains("unknown day \"mnd\""), "{err}");
        let err = parse_toml(r#"{ days = [], start = "09:00", end = "17:00" }"#).unwrap_err();
        assert!(err.contains("`days` is empty"), "{err}");
        let err = parse_toml(r#"{ start = "09:00", end = "17:00", zone = "UTC" }"#).unwrap_err();
        assert!(err.contains("zone"), "{err}");
    }

    #[test]
    fn round_trips_through_its_toml_shape() {
        let w = window(
            r#"{ days = ["fri", "mon", "mon"], start = "09:00", end = "17:30:15", tz = "Asia/Kolkata" }"#,
        );
        assert_eq!(w.days, vec![Weekday::Monday, Weekday::Friday]);
        assert_eq!(w.to_string(), "mon,fri 09:00-17:30:15 Asia/Kolkata");
        let json = serde_json::to_value(&w).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({"days": ["mon", "fri"], "start": "09:00", "end": "17:30:15", "tz": "Asia/Kolkata"})
        );
        let back: DeployWindow = serde_json::from_value(json).expect("reads back");
        assert_eq!(back, w);
    }

    #[test]
    fn the_built_in_zone_database_has_the_zones() {
        // What a machine without /usr/share/zoneinfo falls back to.
        let bundled = TimeZoneDatabase::bundled();
        let berlin = bundled.get("Europe/Berlin").expect("bundled Europe/Berlin");
        let summer: Timestamp = "2024-07-01T12:00:00Z".parse().expect("instant");
        assert_eq!(summer.to_zoned(berlin).offset().seconds(), 2 * 3600);
    }
}

//! What `rate-limiting` and `response-ratelimiting` share: the windows (Kong's
//! `expiration.lua`, `kong.tools.timestamp`), the counter keys, and the three places counters
//! live (`local`, `cluster`, `redis`).

pub(crate) mod local;
pub(crate) mod redis;

use std::time::{SystemTime, UNIX_EPOCH};

use uuid::Uuid;

pub use self::redis::RedisConfig;

/// A window of a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Period {
    /// One second.
    Second,
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One day.
    Day,
    /// A calendar month (30 days long, for expiry and `RateLimit-Reset`).
    Month,
    /// A calendar year (365 days long).
    Year,
}

impl Period {
    /// Every window, shortest first.
    pub const ALL: [Period; 6] = [
        Period::Second,
        Period::Minute,
        Period::Hour,
        Period::Day,
        Period::Month,
        Period::Year,
    ];

    /// The config field and counter name: `second` ... `year`.
    pub fn name(self) -> &'static str {
        match self {
            Period::Second => "second",
            Period::Minute => "minute",
            Period::Hour => "hour",
            Period::Day => "day",
            Period::Month => "month",
            Period::Year => "year",
        }
    }

    /// rate-limiting's `X-RateLimit-Limit-<Period>` header.
    pub fn limit_header(self) -> &'static str {
        match self {
            Period::Second => "X-RateLimit-Limit-Second",
            Period::Minute => "X-RateLimit-Limit-Minute",
            Period::Hour => "X-RateLimit-Limit-Hour",
            Period::Day => "X-RateLimit-Limit-Day",
            Period::Month => "X-RateLimit-Limit-Month",
            Period::Year => "X-RateLimit-Limit-Year",
        }
    }

    /// rate-limiting's `X-RateLimit-Remaining-<Period>` header.
    pub fn remaining_header(self) -> &'static str {
        match self {
            Period::Second => "X-RateLimit-Remaining-Second",
            Period::Minute => "X-RateLimit-Remaining-Minute",
            Period::Hour => "X-RateLimit-Remaining-Hour",
            Period::Day => "X-RateLimit-Remaining-Day",
            Period::Month => "X-RateLimit-Remaining-Month",
            Period::Year => "X-RateLimit-Remaining-Year",
        }
    }

    /// How long a counter of this window lives, in seconds (Kong's `EXPIRATION`).
    pub fn seconds(self) -> i64 {
        match self {
            Period::Second => 1,
            Period::Minute => 60,
            Period::Hour => 3_600,
            Period::Day => 86_400,
            Period::Month => 2_592_000,
            Period::Year => 31_536_000,
        }
    }

    /// When the window containing `now` (seconds since the epoch) started, in seconds:
    /// calendar-aligned in UTC.
    pub fn start(self, now: i64) -> i64 {
        let day = now.div_euclid(86_400);
        match self {
            Period::Second => now,
            Period::Minute => now - now.rem_euclid(60),
            Period::Hour => now - now.rem_euclid(3_600),
            Period::Day => day * 86_400,
            Period::Month => {
                let (y, m, _) = civil_from_days(day);
                days_from_civil(y, m, 1) * 86_400
            }
            Period::Year => {
                let (y, _, _) = civil_from_days(day);
                days_from_civil(y, 1, 1) * 86_400
            }
        }
    }
}

/// The current time in whole seconds (`ngx.time()`).
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The (year, month, day) of a day number since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The day number since 1970-01-01 of a (year, month, day).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Where counters live (the `policy` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// In this node's memory.
    Local,
    /// In the database every node shares.
    Cluster,
    /// In Redis.
    Redis,
}

impl Policy {
    /// The policy a validated `policy` setting names.
    pub fn parse(name: &str) -> Policy {
        match name {
            "cluster" => Policy::Cluster,
            "redis" => Policy::Redis,
            _ => Policy::Local,
        }
    }
}

/// Kong's nil UUID for an instance not attached to a route or service.
pub(crate) fn or_nil(id: Option<Uuid>) -> Uuid {
    id.unwrap_or(Uuid::nil())
}

/// A limit as Kong prints it: an integer without a fraction, else the number.
pub(crate) fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Kong's period-order rule (`validate_periods_order`): a longer window's limit may not be
/// lower than a shorter one's. `message` formats (longer, its limit, shorter, its limit).
pub(crate) fn check_order(
    limits: &[(Period, Option<f64>)],
    message: impl Fn(&str, f64, &str, f64) -> String,
) -> Result<(), String> {
    for (i, (shorter, v1)) in limits.iter().enumerate() {
        let Some(v1) = v1 else { continue };
        for (longer, v2) in &limits[i + 1..] {
            if let Some(v2) = v2
                && v2 < v1
            {
                return Err(message(longer.name(), *v2, shorter.name(), *v1));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_start_on_utc_calendar_boundaries() {
        // 2024-02-29T13:45:30Z
        let now = 1_709_214_330;
        assert_eq!(Period::Second.start(now), now);
        assert_eq!(Period::Minute.start(now), 1_709_214_300);
        assert_eq!(Period::Hour.start(now), 1_709_211_600);
        assert_eq!(Period::Day.start(now), 1_709_164_800);
        assert_eq!(Period::Month.start(now), 1_706_745_600); // 2024-02-01
        assert_eq!(Period::Year.start(now), 1_704_067_200); // 2024-01-01
        assert_eq!(Period::Year.start(0), 0);
        assert_eq!(Period::Month.start(1_704_067_199), 1_701_388_800); // 2023-12-01
    }

    #[test]
    fn numbers_print_as_lua_does() {
        assert_eq!(number(6.0), "6");
        assert_eq!(number(0.5), "0.5");
        assert_eq!(number(-1.0), "-1");
    }
}

//! `Date`: an instant with its UTC offset, at the platform's 100 ns precision.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike, Utc};

/// Nanoseconds in one .NET tick, the platform's finest time unit.
const NANOS_PER_TICK: u32 = 100;

/// The longest text [`EventDate`] writes: `YYYY-MM-DDTHH:MM:SS.fffffff+HH:MM`.
pub(crate) const MAX_DATE_LEN: usize = 33;

/// When an event happened: an instant, the UTC offset it was recorded in, and
/// a precision of 100 ns (one .NET tick), as the platform sends it.
///
/// On the wire it is written as .NET's JSON serializer writes a
/// `DateTimeOffset`: seconds, then at most 7 fractional digits with trailing
/// zeros trimmed (no dot when the fraction is zero), then `+HH:MM` or `-HH:MM`,
/// never `Z`. It reads any RFC 3339 date-time with an offset or `Z` and 0-9
/// fractional digits; digits past the seventh are cut, not rounded.
///
/// Two dates are equal when both the instant and the offset are equal, so that
/// equal dates are written identically.
///
/// It only holds what the wire form can carry and the parser reads back: a
/// local date in the years 0000-9999 and an offset of whole minutes.
/// [`new`](Self::new) refuses anything else, so no event can carry a date
/// that a receiver would reject.
///
/// ```
/// use eventhook::EventDate;
///
/// let date: EventDate = "2019-07-10T15:47:58.123456789Z".parse().unwrap();
/// assert_eq!(date.to_string(), "2019-07-10T15:47:58.1234567+00:00");
/// assert!("2019-07-10T15:47:58".parse::<EventDate>().is_err()); // no offset
///
/// let far = chrono::NaiveDate::from_ymd_opt(10_000, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap().and_utc();
/// assert!(EventDate::new(far).is_err()); // year 10000 cannot be written
/// ```
#[derive(Clone, Copy)]
pub struct EventDate {
    value: DateTime<FixedOffset>,
}

impl EventDate {
    /// The date for `value`, cut to whole 100 ns ticks, keeping its offset;
    /// an error if its local date is outside the years 0000-9999 or its
    /// offset is not whole minutes (the wire form cannot carry either).
    ///
    /// ```
    /// use chrono::{FixedOffset, TimeZone};
    /// use eventhook::EventDate;
    ///
    /// let paris = FixedOffset::east_opt(3600).unwrap();
    /// let date = EventDate::new(paris.with_ymd_and_hms(2019, 7, 10, 17, 47, 58).unwrap()).unwrap();
    /// assert_eq!(date.to_string(), "2019-07-10T17:47:58+01:00");
    /// let odd_offset = FixedOffset::east_opt(3601).unwrap();
    /// assert!(EventDate::new(odd_offset.with_ymd_and_hms(2019, 7, 10, 17, 47, 58).unwrap()).is_err());
    /// ```
    pub fn new<Tz: TimeZone>(value: DateTime<Tz>) -> Result<EventDate, DateError> {
        let value = value.fixed_offset();
        if !(0..=9999).contains(&value.naive_local().year()) || value.offset().local_minus_utc() % 60 != 0 {
            return Err(DateError { out_of_range: true });
        }
        let nanos = value.nanosecond();
        // .NET has no leap seconds and the parser rejects second 60, so a
        // chrono leap second (nanos >= 1e9) becomes the last tick of second 59.
        let nanos = nanos.min(999_999_999);
        let truncated = nanos - nanos % NANOS_PER_TICK;
        let value = value.with_nanosecond(truncated).unwrap_or(value);
        Ok(EventDate { value })
    }

    /// The current time in UTC, from the system clock.
    pub fn now() -> EventDate {
        EventDate::from_clock(Utc::now())
    }

    /// The date for a clock's reading, in UTC: a clock set outside the
    /// years 0000-9999 gives the nearest date that can be written, so that
    /// stamping an event never fails.
    pub(crate) fn from_clock(wall_time: DateTime<Utc>) -> EventDate {
        let first = NaiveDate::from_ymd_opt(0, 1, 1).and_then(|date| date.and_hms_opt(0, 0, 0));
        let last =
            NaiveDate::from_ymd_opt(9999, 12, 31).and_then(|date| date.and_hms_nano_opt(23, 59, 59, 999_999_900));
        let clamped = match (first, last) {
            (Some(first), Some(last)) => wall_time.clamp(first.and_utc(), last.and_utc()),
            _ => wall_time,
        };
        // In UTC and within the years 0000-9999 now, so `new` accepts it.
        EventDate::new(clamped).unwrap_or(EventDate { value: DateTime::UNIX_EPOCH.fixed_offset() })
    }

    /// The date as a chrono `DateTime` with its offset.
    pub fn to_datetime(self) -> DateTime<FixedOffset> {
        self.value
    }

    /// The same instant in UTC.
    pub fn to_utc(self) -> DateTime<Utc> {
        self.value.with_timezone(&Utc)
    }

    /// Parses the text of a `Date` field (see the type's documentation).
    pub fn parse(text: &str) -> Result<EventDate, DateError> {
        parse_rfc3339(text.as_bytes()).ok_or(DateError { out_of_range: false })
    }

    /// Writes the wire form into `buffer` and returns how many bytes it used.
    ///
    /// Hand-written because this runs for every event encoded: no general
    /// formatter, no allocation.
    pub(crate) fn write_wire(self, buffer: &mut [u8; MAX_DATE_LEN]) -> usize {
        fn put(buffer: &mut [u8; MAX_DATE_LEN], at: usize, value: u32, digits: u32) -> usize {
            let mut divisor = 10u32.pow(digits - 1);
            for index in 0..digits as usize {
                buffer[at + index] = b'0' + ((value / divisor) % 10) as u8;
                divisor /= 10;
            }
            at + digits as usize
        }
        let local = self.value.naive_local();
        let (date, time) = (local.date(), local.time());
        // chrono keeps a leap second as nanos >= 1e9 on second 59.
        let (second, nanos) = match time.nanosecond() {
            nanos if nanos >= 1_000_000_000 => (time.second() + 1, nanos - 1_000_000_000),
            nanos => (time.second(), nanos),
        };
        // The constructors keep the local year within 0..=9999.
        put(buffer, 0, date.year().unsigned_abs(), 4);
        buffer[4] = b'-';
        put(buffer, 5, date.month(), 2);
        buffer[7] = b'-';
        put(buffer, 8, date.day(), 2);
        buffer[10] = b'T';
        put(buffer, 11, time.hour(), 2);
        buffer[13] = b':';
        put(buffer, 14, time.minute(), 2);
        buffer[16] = b':';
        let mut length = put(buffer, 17, second, 2);
        let mut ticks = nanos / NANOS_PER_TICK;
        if ticks != 0 {
            let mut digits = 7;
            while ticks.is_multiple_of(10) {
                ticks /= 10;
                digits -= 1;
            }
            buffer[length] = b'.';
            length = put(buffer, length + 1, ticks, digits);
        }
        let offset_seconds = self.value.offset().local_minus_utc();
        buffer[length] = if offset_seconds < 0 { b'-' } else { b'+' };
        let offset_minutes = offset_seconds.unsigned_abs() / 60;
        length = put(buffer, length + 1, offset_minutes / 60, 2);
        buffer[length] = b':';
        put(buffer, length + 1, offset_minutes % 60, 2)
    }
}

impl PartialEq for EventDate {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value && self.value.offset() == other.value.offset()
    }
}

impl Eq for EventDate {}

// By hand to match `PartialEq`: chrono's own `Hash` leaves the offset out.
impl std::hash::Hash for EventDate {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.value.naive_utc().hash(state);
        self.value.offset().local_minus_utc().hash(state);
    }
}

impl fmt::Display for EventDate {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buffer = [0u8; MAX_DATE_LEN];
        let length = self.write_wire(&mut buffer);
        // Only ASCII digits and punctuation are written.
        formatter.write_str(std::str::from_utf8(&buffer[..length]).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for EventDate {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "EventDate({self})")
    }
}

impl FromStr for EventDate {
    type Err = DateError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        EventDate::parse(text)
    }
}

impl<Tz: TimeZone> TryFrom<DateTime<Tz>> for EventDate {
    type Error = DateError;

    fn try_from(value: DateTime<Tz>) -> Result<Self, Self::Error> {
        EventDate::new(value)
    }
}

impl serde::Serialize for EventDate {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for EventDate {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        EventDate::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The error for a `Date` that is not an RFC 3339 date-time with an offset,
/// or a date the wire form cannot carry (see [`EventDate::new`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", if *out_of_range {
    "outside what the wire form can carry (a local date in the years 0000-9999, an offset of whole minutes)"
} else {
    "not an RFC 3339 date-time with an offset (expected e.g. 2019-07-10T15:47:58.580873+00:00)"
})]
pub struct DateError {
    out_of_range: bool,
}

/// Reads `YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|+HH:MM|-HH:MM)`, checking every field's range.
fn parse_rfc3339(text: &[u8]) -> Option<EventDate> {
    fn number(text: &[u8], start: usize, digits: usize) -> Option<u32> {
        let slice = text.get(start..start + digits)?;
        slice.iter().try_fold(0u32, |value, byte| byte.is_ascii_digit().then(|| value * 10 + u32::from(byte - b'0')))
    }
    let expect = |index: usize, allowed: &[u8]| text.get(index).is_some_and(|byte| allowed.contains(byte));

    let year = number(text, 0, 4)?;
    let month = number(text, 5, 2)?;
    let day = number(text, 8, 2)?;
    let hour = number(text, 11, 2)?;
    let minute = number(text, 14, 2)?;
    let second = number(text, 17, 2)?;
    if !(expect(4, b"-") && expect(7, b"-") && expect(10, b"Tt") && expect(13, b":") && expect(16, b":")) {
        return None;
    }
    let mut position = 19;
    let mut nanos = 0u32;
    if expect(position, b".") {
        position += 1;
        let digits_start = position;
        while let Some(digit) = text.get(position).filter(|byte| byte.is_ascii_digit()) {
            // At most 9 digits are valid; past that the loop only counts.
            if position - digits_start < 9 {
                nanos = nanos * 10 + u32::from(digit - b'0');
            }
            position += 1;
        }
        let digits = position - digits_start;
        if digits == 0 || digits > 9 {
            return None;
        }
        // Scale once, from a table: a `pow` per digit was a visible part of parsing a push.
        const SCALE: [u32; 9] = [100_000_000, 10_000_000, 1_000_000, 100_000, 10_000, 1_000, 100, 10, 1];
        nanos *= SCALE[digits - 1];
    }
    let offset_seconds: i32 = match text.get(position)? {
        b'Z' | b'z' => {
            position += 1;
            0
        }
        sign @ (b'+' | b'-') => {
            let offset_hours = number(text, position + 1, 2)?;
            let offset_minutes = number(text, position + 4, 2)?;
            if !expect(position + 3, b":") || offset_hours > 23 || offset_minutes > 59 {
                return None;
            }
            position += 6;
            let magnitude = (offset_hours * 3600 + offset_minutes * 60) as i32;
            if *sign == b'-' {
                -magnitude
            } else {
                magnitude
            }
        }
        _ => return None,
    };
    if position != text.len() {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(year as i32, month, day)?;
    // Leap seconds are not accepted: .NET's DateTimeOffset has none either.
    let time = NaiveTime::from_hms_nano_opt(hour, minute, second, nanos - nanos % NANOS_PER_TICK)?;
    if second > 59 {
        return None;
    }
    let offset = FixedOffset::east_opt(offset_seconds)?;
    // Straight from local time to UTC: a fixed offset is never ambiguous, so
    // chrono's general `from_local_datetime` path is not needed (hot when parsing).
    let utc = NaiveDateTime::new(date, time).checked_sub_offset(offset)?;
    Some(EventDate { value: DateTime::from_naive_utc_and_offset(utc, offset) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_dotnet_form() {
        let date = EventDate::parse("2019-07-10T15:47:58.5000000+00:00").unwrap();
        assert_eq!(date.to_string(), "2019-07-10T15:47:58.5+00:00");
        let date = EventDate::parse("0001-01-01T00:00:00-23:59").unwrap();
        assert_eq!(date.to_string(), "0001-01-01T00:00:00-23:59");
        let longest = EventDate::parse("9999-12-31T23:59:59.9999999+14:00").unwrap();
        assert_eq!(longest.to_string().len(), MAX_DATE_LEN);
    }

    #[test]
    fn offset_is_part_of_equality() {
        let utc = EventDate::parse("2019-07-10T15:47:58+00:00").unwrap();
        let shifted = EventDate::parse("2019-07-10T17:47:58+02:00").unwrap();
        assert_eq!(utc.to_utc(), shifted.to_utc());
        assert_ne!(utc, shifted);
    }

    #[test]
    fn rejects_malformed_text() {
        for text in [
            "2019-07-10T15:47:58.1234567890+00:00",
            "2019-07-10T15:47:60+00:00",
            "2019-07-10T15:47:58+00:00 ",
            "2019-07-10T15:47:58+0000",
            "2019-07-10T15:47:58+00:60",
            "+019-07-10T15:47:58+00:00",
        ] {
            assert!(EventDate::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn a_leap_second_is_written_as_a_date_that_parses_back() {
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31).unwrap().and_hms_nano_opt(23, 59, 59, 1_500_000_000).unwrap();
        let date = EventDate::new(leap.and_utc()).unwrap();
        assert_eq!(date.to_string(), "2016-12-31T23:59:59.9999999+00:00");
        assert_eq!(EventDate::parse(&date.to_string()), Ok(date));
    }

    #[test]
    fn equal_dates_hash_equally_and_offsets_count() {
        use std::collections::HashSet;
        let utc = EventDate::parse("2019-07-10T15:47:58+00:00").unwrap();
        let shifted = EventDate::parse("2019-07-10T17:47:58+02:00").unwrap();
        let set: HashSet<EventDate> = [utc, utc, shifted].into_iter().collect();
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn new_truncates_to_ticks() {
        let value = DateTime::parse_from_rfc3339("2019-07-10T15:47:58.123456789+00:00").unwrap();
        assert_eq!(EventDate::new(value).unwrap().to_string(), "2019-07-10T15:47:58.1234567+00:00");
    }

    /// Issue 11: year 10000 was written as `9999-02-29...` and negative years
    /// as 0000, dates the parser rejects, so one event poisoned its webhook.
    #[test]
    fn dates_the_wire_cannot_carry_are_refused_where_they_are_made() {
        let utc = |year, month, day| NaiveDate::from_ymd_opt(year, month, day).unwrap().and_hms_opt(12, 0, 0).unwrap();
        for naive in [utc(10_000, 2, 29), utc(-1, 6, 1), utc(-262_000, 1, 1), utc(262_000, 1, 1)] {
            let error = EventDate::new(naive.and_utc()).unwrap_err();
            assert!(error.to_string().contains("0000-9999"), "{naive}: {error}");
        }
        // The local date counts: 9999-12-31T23:00Z is 10000-01-01 at +01:00.
        let late = utc(9999, 12, 31).with_hour(23).unwrap().and_utc();
        assert!(EventDate::new(late).is_ok());
        assert!(EventDate::new(late.with_timezone(&FixedOffset::east_opt(3600).unwrap())).is_err());
        // Offsets are written in whole minutes.
        assert!(EventDate::new(late.with_timezone(&FixedOffset::west_opt(90).unwrap())).is_err());
        // The edges are written and read back.
        for text in ["0000-01-01T00:00:00+00:00", "0000-01-01T00:00:00+23:59", "9999-12-31T23:59:59.9999999-23:59"] {
            let date = EventDate::parse(text).unwrap();
            assert_eq!(EventDate::new(date.to_datetime()), Ok(date));
            assert_eq!(date.to_string(), text);
        }
    }

    #[test]
    fn a_clock_outside_the_years_0000_9999_stamps_the_nearest_date() {
        let utc = |year| NaiveDate::from_ymd_opt(year, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap().and_utc();
        assert_eq!(EventDate::from_clock(utc(12_000)).to_string(), "9999-12-31T23:59:59.9999999+00:00");
        assert_eq!(EventDate::from_clock(utc(-5)).to_string(), "0000-01-01T00:00:00+00:00");
        assert_eq!(EventDate::from_clock(utc(2024)).to_string(), "2024-01-01T00:00:00+00:00");
    }
}

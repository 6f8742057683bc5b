//! `BackupScheduler`: backups on 5-field cron schedules (minute hour day-of-month month
//! day-of-week, UTC), run in the background, with failures and missed runs reported to a
//! callback.

use super::kind::BackupKind;
use super::manager::BackupManager;
use crate::error::{Error, Result};
use chrono::{DateTime, Datelike, Duration as ChronoDuration, Timelike, Utc};
use serde::Serialize;
use std::str::FromStr;
use std::sync::Arc;

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule {
    minutes: Vec<bool>,
    hours: Vec<bool>,
    days: Vec<bool>,
    months: Vec<bool>,
    weekdays: Vec<bool>,
    days_restricted: bool,
    weekdays_restricted: bool,
    text: String,
}

fn parse_field(field: &str, min: u32, max: u32, name: &str) -> Result<(Vec<bool>, bool)> {
    let mut set = vec![false; max as usize + 1];
    let bad = || {
        Error::invalid(format!("cron {name} field {field:?} is not valid (allowed {min}-{max}, *, a-b, */n, lists)"))
    };
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().ok().filter(|s| *s > 0).ok_or_else(bad)?),
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?)
        } else {
            let v: u32 = range.parse().map_err(|_| bad())?;
            (v, if step > 1 { max } else { v })
        };
        if lo < min || hi > max || lo > hi {
            return Err(bad());
        }
        // A step larger than the range selects only its start (`59/4294967295` is minute 59).
        let mut v = Some(lo);
        while let Some(x) = v.filter(|x| *x <= hi) {
            set[x as usize] = true;
            v = x.checked_add(step);
        }
    }
    Ok((set, field != "*"))
}

impl FromStr for CronSchedule {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(Error::invalid(format!(
                "a cron expression has 5 fields (minute hour day month weekday), got {text:?}"
            )));
        }
        let (minutes, _) = parse_field(fields[0], 0, 59, "minute")?;
        let (hours, _) = parse_field(fields[1], 0, 23, "hour")?;
        let (days, days_restricted) = parse_field(fields[2], 1, 31, "day-of-month")?;
        let (months, _) = parse_field(fields[3], 1, 12, "month")?;
        let (mut weekdays, weekdays_restricted) = parse_field(fields[4], 0, 7, "day-of-week")?;
        // 7 is Sunday too.
        if weekdays[7] {
            weekdays[0] = true;
        }
        weekdays.truncate(7);
        Ok(CronSchedule {
            minutes,
            hours,
            days,
            months,
            weekdays,
            days_restricted,
            weekdays_restricted,
            text: text.to_string(),
        })
    }
}

impl CronSchedule {
    /// True when the schedule fires in the minute of `t`.
    pub fn matches(&self, t: DateTime<Utc>) -> bool {
        let day = self.days[t.day() as usize];
        let weekday = self.weekdays[t.weekday().num_days_from_sunday() as usize];
        // Classic cron: with both day fields restricted, either one matching is enough.
        let day_ok = match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => day || weekday,
            (true, false) => day,
            (false, true) => weekday,
            (false, false) => true,
        };
        self.minutes[t.minute() as usize] && self.hours[t.hour() as usize] && self.months[t.month() as usize] && day_ok
    }

    /// The first firing strictly after `t` (whole minutes), within five years.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut m = t.with_second(0)?.with_nanosecond(0)? + ChronoDuration::minutes(1);
        let limit = t + ChronoDuration::days(366 * 5);
        while m <= limit {
            if !self.months[m.month() as usize] {
                // Jump to the first minute of the next month.
                let (y, mo) = if m.month() == 12 { (m.year() + 1, 1) } else { (m.year(), m.month() + 1) };
                m = chrono::NaiveDate::from_ymd_opt(y, mo, 1)?.and_hms_opt(0, 0, 0)?.and_utc();
                continue;
            }
            if self.matches(m) {
                return Some(m);
            }
            m += ChronoDuration::minutes(1);
        }
        None
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// What the scheduler reports.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ScheduleEvent {
    /// A scheduled backup completed.
    Completed { schedule: String, kind: String, backup_id: String, scheduled_at: DateTime<Utc> },
    /// A scheduled backup failed (also recorded as a failed `backup_history` row).
    Failed { schedule: String, kind: String, scheduled_at: DateTime<Utc>, error: String },
    /// A run was due while the scheduler was not running; it is reported, not silently skipped.
    Missed { schedule: String, kind: String, scheduled_at: DateTime<Utc>, last_backup_at: Option<DateTime<Utc>> },
}

/// Called from the scheduler's task on the library runtime.
pub type ScheduleCallback = Arc<dyn Fn(&ScheduleEvent) + Send + Sync>;

/// A background task that calls a user's callback, stopped by dropping it: when the drop
/// returns (outside the callback) the callback is not running and will not run again. A panic
/// in the callback is caught and does not end the task.
pub(crate) struct CallbackTask {
    task: tokio::task::JoinHandle<()>,
    // Held while the callback runs, so a drop waits for a running callback; `caller` says which
    // thread runs it, so a drop from inside the callback does not wait.
    running: Arc<std::sync::Mutex<()>>,
    caller: Arc<std::sync::Mutex<Option<std::thread::ThreadId>>>,
}

impl CallbackTask {
    /// Spawns `body` on the library runtime with `callback` wrapped so the drop can wait for it.
    pub(crate) fn spawn<T, B, F>(callback: Arc<dyn Fn(&T) + Send + Sync>, body: B) -> Self
    where
        T: 'static,
        B: FnOnce(Box<dyn Fn(&T) + Send + Sync>) -> F,
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let running = Arc::new(std::sync::Mutex::new(()));
        let caller = Arc::new(std::sync::Mutex::new(None));
        let (run_guard, caller_slot) = (running.clone(), caller.clone());
        let guarded = move |e: &T| {
            let _running = run_guard.lock().unwrap_or_else(|p| p.into_inner());
            *caller_slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::thread::current().id());
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(e)));
            *caller_slot.lock().unwrap_or_else(|p| p.into_inner()) = None;
        };
        let task = crate::runtime::runtime().spawn(body(Box::new(guarded)));
        CallbackTask { task, running, caller }
    }
}

impl Drop for CallbackTask {
    fn drop(&mut self) {
        self.task.abort();
        let inside = *self.caller.lock().unwrap_or_else(|p| p.into_inner()) == Some(std::thread::current().id());
        if !inside {
            drop(self.running.lock().unwrap_or_else(|p| p.into_inner()));
        }
    }
}

/// Runs full backups on a cron schedule until dropped. Dropping it stops the schedule: when the
/// drop returns (outside the callback) the callback is not running and will not run again.
pub struct BackupScheduler {
    _task: CallbackTask,
}

impl BackupScheduler {
    /// Starts a schedule of full logical backups (see [`BackupScheduler::start_with`]).
    pub fn start(manager: BackupManager, schedule: &str, callback: ScheduleCallback) -> Result<Self> {
        Self::start_with(manager, schedule, BackupKind::Logical, callback)
    }

    /// Starts the schedule. First reports a missed run if the last completed backup of that
    /// type is older than the schedule's latest due time.
    pub fn start_with(
        manager: BackupManager,
        schedule: &str,
        what: BackupKind,
        callback: ScheduleCallback,
    ) -> Result<Self> {
        let cron: CronSchedule = schedule.parse()?;
        let kind = what.as_str().to_string();
        let (history_type, method) = what.history_type_and_method();
        let task = CallbackTask::spawn(callback, move |callback| async move {
            let last = manager.last_completed_by(history_type, Some(method)).await.ok().flatten();
            if let Some(last) = last {
                if let Some(due) = cron.next_after(last) {
                    if due <= Utc::now() {
                        callback(&ScheduleEvent::Missed {
                            schedule: cron.as_str().into(),
                            kind: kind.clone(),
                            scheduled_at: due,
                            last_backup_at: Some(last),
                        });
                    }
                }
            }
            loop {
                let Some(next) = cron.next_after(Utc::now()) else { return };
                let wait = (next - Utc::now()).to_std().unwrap_or_default();
                tokio::time::sleep(wait).await;
                let result = manager.create_kind(what).await;
                let event = match result {
                    Ok(m) => ScheduleEvent::Completed {
                        schedule: cron.as_str().into(),
                        kind: kind.clone(),
                        backup_id: m.backup_id,
                        scheduled_at: next,
                    },
                    Err(e) => ScheduleEvent::Failed {
                        schedule: cron.as_str().into(),
                        kind: kind.clone(),
                        scheduled_at: next,
                        error: e.to_string(),
                    },
                };
                callback(&event);
            }
        });
        Ok(BackupScheduler { _task: task })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_step_beyond_the_range_selects_only_its_start() {
        // 59 + 4294967295 overflowed: a panic in debug builds, every minute in release builds.
        let s: CronSchedule = "59/4294967295 * * * *".parse().unwrap();
        assert!(s.matches(at("2026-01-01T10:59:00Z")));
        assert!(!s.matches(at("2026-01-01T10:58:00Z")));
        assert!(!s.matches(at("2026-01-01T10:00:00Z")));
        let s: CronSchedule = "0 1-23/4294967295 * * *".parse().unwrap();
        assert_eq!(s.next_after(at("2026-01-01T02:00:00Z")), Some(at("2026-01-02T01:00:00Z")));
    }

    #[test]
    fn parses_and_matches_like_cron() {
        let every = CronSchedule::from_str("* * * * *").unwrap();
        assert_eq!(every.next_after(at("2026-01-01T10:00:30Z")), Some(at("2026-01-01T10:01:00Z")));
        let nightly: CronSchedule = "30 2 * * *".parse().unwrap();
        assert_eq!(nightly.next_after(at("2026-01-01T10:00:00Z")), Some(at("2026-01-02T02:30:00Z")));
        let quarter: CronSchedule = "*/15 9-17 * * 1-5".parse().unwrap();
        // 2026-01-03 is a Saturday: the next firing is Monday 09:00.
        assert_eq!(quarter.next_after(at("2026-01-02T17:50:00Z")), Some(at("2026-01-05T09:00:00Z")));
        let sunday7: CronSchedule = "0 0 * * 7".parse().unwrap();
        assert_eq!(sunday7.next_after(at("2026-01-01T00:00:00Z")), Some(at("2026-01-04T00:00:00Z")));
        let feb29: CronSchedule = "0 0 29 2 *".parse().unwrap();
        assert_eq!(feb29.next_after(at("2026-03-01T00:00:00Z")), Some(at("2028-02-29T00:00:00Z")));
        for bad in ["", "* * * *", "60 * * * *", "* 24 * * *", "*/0 * * * *", "a * * * *", "5-1 * * * *"] {
            assert!(bad.parse::<CronSchedule>().is_err(), "{bad:?}");
        }
    }
}

//! Waits on the lease's clock. A lease's deadline is judged on `CLOCK_BOOTTIME` (see
//! `lease.rs`), which keeps counting while the machine is suspended; tokio's timers count
//! `CLOCK_MONOTONIC`, which stops. A kill, a `lost()` or a driver's timeout waited for with
//! tokio's timer would fire late by the time slept, while another process may already lead.
//! So every wait on a deadline goes through [`sleep_until`]: a `timerfd` on `CLOCK_BOOTTIME`,
//! armed at the absolute instant, awaited through tokio's reactor.
//!
//! The deadline comes in as a `std` instant (what the handles report); it is turned into a
//! `CLOCK_BOOTTIME` instant when the wait begins, so a suspend during the wait is counted.
//! Elsewhere than Linux there is no such clock: tokio's timer.

use std::time::Instant;

/// Resolves at `deadline`, counting time spent suspended (Linux), so a suspend cannot delay
/// it. Cancel-safe. Must be called within a tokio runtime with IO enabled (the driver's own
/// connections need one); if no timer can be made, falls back on tokio's timer.
pub async fn sleep_until(deadline: Instant) {
    #[cfg(target_os = "linux")]
    if let Ok(timer) = Timer::at(deadline) {
        timer.wait().await;
        return;
    }
    tokio::time::sleep_until(deadline.into()).await
}

/// A one-shot `CLOCK_BOOTTIME` timer.
#[cfg(target_os = "linux")]
struct Timer {
    fd: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
}

#[cfg(target_os = "linux")]
impl Timer {
    fn at(deadline: Instant) -> std::io::Result<Timer> {
        use rustix::time::{
            clock_gettime, timerfd_create, timerfd_settime, ClockId, Itimerspec, TimerfdClockId,
            TimerfdFlags, TimerfdTimerFlags, Timespec,
        };
        let fd = timerfd_create(
            TimerfdClockId::Boottime,
            TimerfdFlags::CLOEXEC | TimerfdFlags::NONBLOCK,
        )?;
        let left = deadline.saturating_duration_since(Instant::now());
        let now = clock_gettime(ClockId::Boottime);
        let nanos = i128::from(now.tv_sec) * 1_000_000_000
            + i128::from(now.tv_nsec)
            + i128::try_from(left.as_nanos()).unwrap_or(i128::MAX / 2);
        let value = Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: Timespec {
                tv_sec: i64::try_from(nanos / 1_000_000_000).unwrap_or(i64::MAX),
                // Never all zero, which would disarm the timer instead.
                tv_nsec: ((nanos % 1_000_000_000) as i64).max(1) as _,
            },
        };
        timerfd_settime(&fd, TimerfdTimerFlags::ABSTIME, &value)?;
        // Deprecated as unsound for a type whose raw descriptor may change or close while
        // registered; an `OwnedFd` owns one descriptor for its whole life, and the safe
        // replacement is `unsafe`, which this crate forbids.
        #[allow(deprecated)]
        let fd = tokio::io::unix::AsyncFd::with_interest(fd, tokio::io::Interest::READABLE)?;
        Ok(Timer { fd })
    }

    async fn wait(&self) {
        loop {
            let Ok(mut ready) = self.fd.readable().await else {
                return; // the reactor is gone: nothing left to wait for
            };
            let mut count = [0u8; 8];
            match rustix::io::read(self.fd.get_ref(), &mut count) {
                Ok(_) => return,
                Err(rustix::io::Errno::AGAIN) => ready.clear_ready(),
                Err(_) => return,
            }
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use super::*;

    /// The clock a timer counts, as the kernel reports it (`CLOCK_BOOTTIME` is 7).
    fn clock_of(timer: &Timer) -> String {
        let info = std::fs::read_to_string(format!(
            "/proc/self/fdinfo/{}",
            timer.fd.get_ref().as_raw_fd()
        ))
        .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("clockid:"))
            .unwrap()
            .trim()
            .to_string()
    }

    #[tokio::test]
    async fn the_timer_counts_the_lease_clock_which_counts_suspends() {
        let timer = Timer::at(Instant::now() + Duration::from_secs(5)).unwrap();
        assert_eq!(clock_of(&timer), libc_boottime().to_string());
    }

    #[tokio::test]
    async fn sleep_until_wakes_at_the_deadline_and_not_before() {
        let start = Instant::now();
        sleep_until(start + Duration::from_millis(100)).await;
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(100), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        // A deadline passed resolves at once.
        let start = Instant::now();
        sleep_until(start - Duration::from_millis(1)).await;
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    /// `CLOCK_BOOTTIME`'s number, from the clock ids rustix names.
    fn libc_boottime() -> i32 {
        7
    }
}

//! Validating a configuration and deriving what was not set: the floors every value must
//! clear, and the timeline (margin, stop-ahead, renew interval) computed from the lease.

use core::time::Duration;

use super::*;

impl ConfigBuilder {
    /// Validates everything and derives what was not set (timeout, margin, retry interval,
    /// stop-ahead, renew interval).
    pub fn build(self) -> Result<Config, ConfigError> {
        check_name("name", &self.name)?;
        check_name("process", &self.process)?;
        in_range("interval", self.interval, MIN_INTERVAL)?;
        let timeout = self
            .timeout
            .unwrap_or_else(|| DEFAULT_TIMEOUT.min(self.interval / 10));
        in_range("timeout", timeout, Duration::from_micros(1))?;
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(ConfigError::Jitter(self.jitter));
        }
        if timeout >= self.interval {
            return Err(ConfigError::TimeoutNotBelowInterval {
                timeout,
                interval: self.interval,
            });
        }
        let margin = self.margin.unwrap_or(self.interval / 20);
        in_range("margin", margin, Duration::ZERO)?;
        let floor = self.interval / MARGIN_FLOOR_DIVISOR;
        if margin < floor {
            return Err(ConfigError::MarginBelowFloor {
                margin,
                floor,
                interval: self.interval,
            });
        }
        if margin >= self.interval {
            return Err(ConfigError::MarginNotBelowInterval {
                margin,
                interval: self.interval,
            });
        }
        if timeout < MIN_TIMEOUT {
            return Err(match self.timeout {
                Some(timeout) => ConfigError::TimeoutBelowFloor {
                    timeout,
                    floor: MIN_TIMEOUT,
                },
                None => ConfigError::IntervalTooShort {
                    interval: self.interval,
                    timeout,
                    floor: MIN_TIMEOUT,
                    min_interval: MIN_DEFAULT_INTERVAL,
                },
            });
        }
        let room = self.interval - margin;
        if timeout >= room {
            return Err(ConfigError::RenewCannotFinish {
                interval: self.interval,
                margin,
                timeout,
            });
        }
        let attempt = attempt(timeout, self.precheck);
        if attempt >= room {
            return Err(ConfigError::PrecheckCannotFinish {
                interval: self.interval,
                margin,
                timeout,
            });
        }
        let retry = self.retry.unwrap_or(self.interval / 10);
        in_range("retry interval", retry, Duration::from_micros(1))?;
        if retry >= self.interval {
            return Err(ConfigError::RetryNotBelowInterval {
                retry,
                interval: self.interval,
            });
        }
        // Jitter is at most 100%, so this is exact enough for a bound.
        let longest_retry = retry + retry.mul_f64(self.jitter);
        let stop_ahead = match self.stop_ahead {
            Some(stop_ahead) => {
                in_range("stop-ahead", stop_ahead, Duration::ZERO)?;
                if stop_ahead.saturating_add(attempt) >= room {
                    return Err(ConfigError::StopAheadTooLong {
                        stop_ahead,
                        interval: self.interval,
                        margin,
                        attempt,
                    });
                }
                stop_ahead
            }
            None => (room.saturating_sub(self.interval / 2 + attempt * 2 + longest_retry))
                .min(self.interval / 4),
        };
        let renew = (self.interval / 2).min(room - stop_ahead - attempt);
        // How much later than `renew` a renew may start and, if it fails, its retry still win
        // before the lease is at risk.
        let renew_late = (room - stop_ahead).saturating_sub(renew + attempt * 2 + longest_retry);
        Ok(Config {
            name: self.name,
            process: self.process,
            interval: self.interval,
            timeout,
            // Exact for every factor with six decimals; `as` saturates and the range is checked.
            jitter_ppm: (self.jitter * 1e6) as u64,
            margin,
            retry,
            stop_ahead,
            renew,
            renew_late,
            precheck: self.precheck,
        })
    }
}

/// One renew attempt: a check, after a precheck if there is one, each bounded by the timeout.
pub(super) fn attempt(timeout: Duration, precheck: bool) -> Duration {
    if precheck {
        timeout * 2
    } else {
        timeout
    }
}

fn check_name(field: &'static str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() {
        return Err(ConfigError::Empty { field });
    }
    if let Some(at) = value.bytes().position(|b| b == 0) {
        return Err(ConfigError::Nul { field, at });
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(ConfigError::TooLong {
            field,
            len: value.len(),
            max: MAX_NAME_BYTES,
        });
    }
    Ok(())
}

fn in_range(field: &'static str, value: Duration, min: Duration) -> Result<(), ConfigError> {
    if value < min || value > MAX_DURATION {
        return Err(ConfigError::OutOfRange {
            field,
            value,
            min,
            max: MAX_DURATION,
        });
    }
    Ok(())
}

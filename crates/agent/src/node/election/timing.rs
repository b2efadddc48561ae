//! The election's timing: lease duration, renew deadline, retry period and join hold-down,
//! from the agent's flags, with the rules they must satisfy.

use std::time::Duration;

/// Election timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// `leaseDurationSeconds` written into the lease.
    pub lease_duration: Duration,
    /// Longest time since the last successful renewal (counted from when it was
    /// sent) during which this node keeps local addresses.
    pub renew_deadline: Duration,
    /// Wait between failed renewals; also the timeout of one renewal.
    pub retry_period: Duration,
    /// Hold-down before claiming addresses after (re)joining.
    pub join_delay: Duration,
}

impl Timing {
    /// PureLB's shipped values for a lease of `lease_duration`: 10 s, 7 s, 2 s
    /// scaled; the join delay is a tenth of the lease.
    pub fn for_lease(lease_duration: Duration) -> Self {
        Self {
            lease_duration,
            renew_deadline: lease_duration.mul_f64(0.7),
            retry_period: lease_duration / 5,
            join_delay: lease_duration / 10,
        }
    }

    /// Renewals of a healthy lease.
    pub fn renew_interval(&self) -> Duration {
        self.lease_duration / 2
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.lease_duration < Duration::from_secs(1) {
            return Err("--lease-duration must be at least 1s".into());
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(format!(
                "--renew-deadline ({:?}) must be shorter than --lease-duration ({:?})",
                self.renew_deadline, self.lease_duration
            ));
        }
        if self.renew_deadline <= self.renew_interval() {
            return Err(format!(
                "--renew-deadline ({:?}) must be longer than half the lease duration ({:?}), the renewal interval",
                self.renew_deadline,
                self.renew_interval()
            ));
        }
        if self.retry_period.is_zero() || self.retry_period > self.renew_deadline {
            return Err(format!(
                "--retry-period ({:?}) must be positive and no longer than --renew-deadline ({:?})",
                self.retry_period, self.renew_deadline
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_defaults_and_validation() {
        let t = Timing::for_lease(Duration::from_secs(10));
        assert_eq!(t.renew_deadline, Duration::from_secs(7));
        assert_eq!(t.retry_period, Duration::from_secs(2));
        assert_eq!(t.join_delay, Duration::from_secs(1));
        assert_eq!(t.renew_interval(), Duration::from_secs(5));
        assert!(t.validate().is_ok());
        let bad = Timing {
            renew_deadline: Duration::from_secs(10),
            ..t
        };
        assert!(bad.validate().unwrap_err().contains("--renew-deadline"));
        let bad = Timing {
            renew_deadline: Duration::from_secs(4),
            ..t
        };
        assert!(bad.validate().is_err());
        let bad = Timing {
            retry_period: Duration::ZERO,
            ..t
        };
        assert!(bad.validate().unwrap_err().contains("--retry-period"));
    }
}

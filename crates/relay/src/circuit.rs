//! Endpoint health: after `failure_threshold` consecutive failures the
//! circuit opens and deliveries pause; every `probe_interval` one delivery
//! is let through as a probe; a success closes the circuit, a failure keeps
//! it open. A subscriber failing without a success for `disable_after` is
//! disabled. Time is Tokio's, so tests run it with paused time.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct CircuitSettings {
    pub failure_threshold: u32,
    pub probe_interval: Duration,
    pub disable_after: Option<Duration>,
}

/// What the subscriber's loop may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Deliver normally.
    Deliver,
    /// Deliver one event as the probe; the result decides the circuit.
    Probe,
    /// Wait until then (or until the probe in flight returns).
    WaitUntil(Instant),
}

/// A change worth logging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Opened,
    Closed,
    /// Failing for longer than `disable_after`.
    Disable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    /// A probe is in flight.
    HalfOpen,
}

#[derive(Debug)]
struct Inner {
    state: CircuitState,
    consecutive_failures: u32,
    /// Since when every attempt failed.
    failing_since: Option<Instant>,
    next_probe: Instant,
}

#[derive(Debug)]
pub struct Circuit {
    settings: CircuitSettings,
    inner: Mutex<Inner>,
}

impl Circuit {
    pub fn new(settings: CircuitSettings) -> Self {
        let inner = Inner {
            state: CircuitState::Closed,
            consecutive_failures: 0,
            failing_since: None,
            next_probe: Instant::now(),
        };
        Self { settings, inner: Mutex::new(inner) }
    }

    pub fn state(&self) -> CircuitState {
        self.inner.lock().expect("circuit lock").state
    }

    pub fn permit(&self) -> Permit {
        let mut inner = self.inner.lock().expect("circuit lock");
        match inner.state {
            CircuitState::Closed => Permit::Deliver,
            CircuitState::HalfOpen => Permit::WaitUntil(Instant::now() + self.settings.probe_interval),
            CircuitState::Open if Instant::now() >= inner.next_probe => {
                inner.state = CircuitState::HalfOpen;
                Permit::Probe
            }
            CircuitState::Open => Permit::WaitUntil(inner.next_probe),
        }
    }

    /// Records an attempt's result (`probe`: it was the probe).
    pub fn record(&self, success: bool, probe: bool) -> Option<Transition> {
        let mut inner = self.inner.lock().expect("circuit lock");
        let now = Instant::now();
        if success {
            inner.consecutive_failures = 0;
            inner.failing_since = None;
            let was = inner.state;
            inner.state = CircuitState::Closed;
            return (was != CircuitState::Closed).then_some(Transition::Closed);
        }
        inner.consecutive_failures += 1;
        let since = *inner.failing_since.get_or_insert(now);
        if self.settings.disable_after.is_some_and(|limit| now.duration_since(since) >= limit) {
            return Some(Transition::Disable);
        }
        match inner.state {
            CircuitState::Closed if inner.consecutive_failures >= self.settings.failure_threshold => {
                inner.state = CircuitState::Open;
                inner.next_probe = now + self.settings.probe_interval;
                Some(Transition::Opened)
            }
            CircuitState::HalfOpen if probe => {
                inner.state = CircuitState::Open;
                inner.next_probe = now + self.settings.probe_interval;
                None
            }
            _ => None,
        }
    }

    /// Back to closed, e.g. when an operator re-enables the subscriber.
    pub fn reset(&self) {
        let mut inner = self.inner.lock().expect("circuit lock");
        inner.state = CircuitState::Closed;
        inner.consecutive_failures = 0;
        inner.failing_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn circuit(disable_after: Option<Duration>) -> Circuit {
        Circuit::new(CircuitSettings { failure_threshold: 3, probe_interval: Duration::from_secs(30), disable_after })
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_threshold_probes_on_schedule_and_closes_on_success() {
        let c = circuit(None);
        assert_eq!(c.record(false, false), None);
        assert_eq!(c.record(false, false), None);
        assert_eq!(c.permit(), Permit::Deliver);
        assert_eq!(c.record(false, false), Some(Transition::Opened));
        let Permit::WaitUntil(until) = c.permit() else { panic!("open circuits wait") };
        assert_eq!(until - Instant::now(), Duration::from_secs(30));

        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(matches!(c.permit(), Permit::WaitUntil(_)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(c.permit(), Permit::Probe);
        assert!(matches!(c.permit(), Permit::WaitUntil(_)), "one probe at a time");
        assert_eq!(c.record(false, true), None, "a failed probe keeps it open");
        assert_eq!(c.state(), CircuitState::Open);

        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(c.permit(), Permit::Probe);
        assert_eq!(c.record(true, true), Some(Transition::Closed));
        assert_eq!(c.permit(), Permit::Deliver);
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_failure_run() {
        let c = circuit(None);
        c.record(false, false);
        c.record(false, false);
        c.record(true, false);
        c.record(false, false);
        c.record(false, false);
        assert_eq!(c.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn failing_for_too_long_disables() {
        let c = circuit(Some(Duration::from_secs(3600)));
        c.record(false, false);
        tokio::time::advance(Duration::from_secs(3599)).await;
        assert_ne!(c.record(false, false), Some(Transition::Disable));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(c.record(false, false), Some(Transition::Disable));
    }
}

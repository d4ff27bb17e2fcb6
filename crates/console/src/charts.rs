//! The overview's charts: this process's own metrics, sampled every
//! [`EVERY`] for the last [`KEPT`] samples, drawn as small SVG lines.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use maud::{Markup, html};
use prometheus::proto::MetricFamily;
use tokio_util::sync::CancellationToken;

/// How often the metrics are sampled.
pub(crate) const EVERY: Duration = Duration::from_secs(5);
/// Samples kept: ten minutes.
const KEPT: usize = 120;

/// One sample of the metrics the overview draws.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sample {
    pub(crate) at: Option<DateTime<Utc>>,
    /// `hookbridge_ingress_requests_total` by source and outcome (totals).
    pub(crate) webhooks: BTreeMap<String, f64>,
    /// `hookbridge_relay_deliveries_total` by outcome (totals).
    pub(crate) deliveries: BTreeMap<String, f64>,
    /// `hookbridge_relay_backlog_events` by subscriber.
    pub(crate) backlog: BTreeMap<String, f64>,
}

#[derive(Debug, Default)]
pub(crate) struct Samples {
    kept: Mutex<VecDeque<Sample>>,
}

impl Samples {
    pub(crate) fn all(&self) -> Vec<Sample> {
        self.kept.lock().expect("samples lock").iter().cloned().collect()
    }

    /// Takes a sample now unless the last is under a quarter of a second
    /// old: the overview then shows what happened since the last tick too.
    pub(crate) fn refresh(&self, registry: &prometheus::Registry) {
        let fresh = self
            .kept
            .lock()
            .expect("samples lock")
            .back()
            .and_then(|s| s.at)
            .is_some_and(|at| (Utc::now() - at).num_milliseconds() < 250);
        if !fresh {
            self.push(read(&registry.gather()));
        }
    }

    fn push(&self, sample: Sample) {
        let mut kept = self.kept.lock().expect("samples lock");
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back(sample);
    }
}

pub(crate) async fn sample(
    samples: std::sync::Arc<Samples>,
    registry: prometheus::Registry,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => samples.push(read(&registry.gather())),
        }
    }
}

fn label<'a>(metric: &'a prometheus::proto::Metric, name: &str) -> &'a str {
    metric.get_label().iter().find(|l| l.name() == name).map_or("", |l| l.value())
}

/// The sample in `families`.
pub(crate) fn read(families: &[MetricFamily]) -> Sample {
    let mut sample = Sample { at: Some(Utc::now()), ..Sample::default() };
    for family in families {
        match family.name() {
            "hookbridge_ingress_requests_total" => {
                for m in family.get_metric() {
                    let key = format!("{} {}", label(m, "source"), label(m, "outcome"));
                    *sample.webhooks.entry(key).or_default() += m.get_counter().get_value();
                }
            }
            "hookbridge_relay_deliveries_total" => {
                for m in family.get_metric() {
                    *sample.deliveries.entry(label(m, "outcome").to_owned()).or_default() +=
                        m.get_counter().get_value();
                }
            }
            "hookbridge_relay_backlog_events" => {
                for m in family.get_metric() {
                    sample.backlog.insert(label(m, "subscriber").to_owned(), m.get_gauge().get_value());
                }
            }
            _ => {}
        }
    }
    sample
}

/// Per-second rates between consecutive samples of the counters `pick`
/// takes from each; series with no change at all are left out.
pub(crate) fn rates(
    samples: &[Sample],
    pick: impl Fn(&Sample) -> &BTreeMap<String, f64>,
) -> BTreeMap<String, Vec<f64>> {
    let mut series: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for pair in samples.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        let seconds = match (before.at, after.at) {
            (Some(a), Some(b)) => (b - a).as_seconds_f64().max(0.001),
            _ => continue,
        };
        for (key, total) in pick(after) {
            let previous = pick(before).get(key).copied().unwrap_or(0.0);
            series.entry(key.clone()).or_default().push(((total - previous) / seconds).max(0.0));
        }
    }
    series.retain(|_, points| points.iter().any(|p| *p > 0.0));
    series
}

/// Gauges over time, as `pick` takes them from each sample.
pub(crate) fn levels(
    samples: &[Sample],
    pick: impl Fn(&Sample) -> &BTreeMap<String, f64>,
) -> BTreeMap<String, Vec<f64>> {
    let mut series: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for sample in samples {
        for (key, value) in pick(sample) {
            series.entry(key.clone()).or_default().push(*value);
        }
    }
    series
}

/// Colours told apart by people with the common colour blindnesses (Okabe–Ito).
const COLOURS: [&str; 7] = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"];

/// A small line chart of `series`, with a legend giving each one's last
/// value (the chart is decoration; the legend says it in words).
pub(crate) fn chart(title: &str, unit: &str, series: &BTreeMap<String, Vec<f64>>) -> Markup {
    const W: f64 = 320.0;
    const H: f64 = 90.0;
    let max = series.values().flatten().copied().fold(0.0_f64, f64::max).max(1.0);
    let points = |values: &[f64]| -> String {
        let n = values.len().max(2) - 1;
        values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", i as f64 * W / n as f64, H - v / max * (H - 4.0) - 2.0))
            .collect::<Vec<_>>()
            .join(" ")
    };
    html! {
        figure.chart {
            figcaption { (title) }
            @if series.is_empty() {
                p.quiet { "Nothing yet: the chart fills as the process samples its metrics every " (EVERY.as_secs()) " s." }
            } @else {
                svg viewBox={ "0 0 " (W) " " (H) } width="320" height="90" role="img" aria-label={ (title) ", last ten minutes" } {
                    line x1="0" y1=(H - 1.0) x2=(W) y2=(H - 1.0) stroke="#888" stroke-width="1" {}
                    @for (i, (_, values)) in series.iter().enumerate() {
                        polyline fill="none" stroke=(COLOURS[i % COLOURS.len()]) stroke-width="2" points=(points(values)) {}
                    }
                }
                p.scale { "peak " (format_value(max)) " " (unit) }
                ul.legend {
                    @for (i, (name, values)) in series.iter().enumerate() {
                        li {
                            span.swatch style={ "background:" (COLOURS[i % COLOURS.len()]) } {}
                            (name) ": " strong { (format_value(values.last().copied().unwrap_or(0.0))) } " " (unit)
                        }
                    }
                }
            }
        }
    }
}

fn format_value(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() { format!("{v:.0}") } else { format!("{v:.2}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(s, 0)
    }

    #[test]
    fn rates_are_per_second_between_samples_and_idle_series_are_left_out() {
        let sample = |s, a: f64, b: f64| Sample {
            at: at(s),
            deliveries: [("delivered".to_owned(), a), ("gone".to_owned(), b)].into(),
            ..Sample::default()
        };
        let samples = [sample(0, 0.0, 3.0), sample(5, 50.0, 3.0), sample(10, 60.0, 3.0)];
        let series = rates(&samples, |s| &s.deliveries);
        assert_eq!(series.get("delivered"), Some(&vec![10.0, 2.0]));
        assert!(!series.contains_key("gone"));
    }

    #[test]
    fn a_chart_names_every_series_with_its_last_value() {
        let series: BTreeMap<String, Vec<f64>> = [("crm".to_owned(), vec![1.0, 4.0])].into();
        let html = chart("Backlog", "events", &series).into_string();
        assert!(html.contains("crm: <strong>4</strong> events"), "{html}");
        assert!(html.contains("<polyline"));
        assert!(chart("Empty", "x", &BTreeMap::new()).into_string().contains("Nothing yet"));
    }
}

#[cfg(test)]
mod reading {
    #[test]
    fn counters_and_gauges_are_read_from_a_registry() {
        let registry = prometheus::Registry::new();
        let deliveries = prometheus::IntCounterVec::new(
            prometheus::Opts::new("hookbridge_relay_deliveries_total", "x"),
            &["subscriber", "outcome"],
        )
        .unwrap();
        registry.register(Box::new(deliveries.clone())).unwrap();
        deliveries.with_label_values(&["crm", "delivered"]).inc_by(3);
        let sample = super::read(&registry.gather());
        assert_eq!(sample.deliveries.get("delivered"), Some(&3.0), "{sample:?}");
    }
}

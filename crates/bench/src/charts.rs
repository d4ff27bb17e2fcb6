//! The scale figures as a reader sees them: tables written between the
//! `<!-- scale:begin -->` and `<!-- scale:end -->` markers of
//! `docs/performance.md`, and SVG charts (plotters) in `docs/scale/`, both
//! drawn from every backend's `docs/scale/<backend>.json`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

use crate::scale::Measured;

const BEGIN: &str = "<!-- scale:begin -->";
const END: &str = "<!-- scale:end -->";
const BACKENDS: [&str; 4] = ["embedded", "nats", "kafka", "kafka-tansu"];
/// Okabe–Ito: told apart with every common colour-vision deficiency.
const COLOURS: [RGBColor; 6] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
];

/// Reads every backend's figures and rewrites the tables and charts.
pub fn publish(docs: &Path) -> anyhow::Result<()> {
    let measured: Vec<Measured> = BACKENDS
        .iter()
        .filter_map(|b| std::fs::read(docs.join("scale").join(format!("{b}.json"))).ok())
        .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
        .collect();
    let dir = docs.join("scale");
    fanout_chart(&measured, &dir.join("fanout.svg"))?;
    latency_chart(&measured, &dir.join("latency.svg"))?;
    backlog_chart(&measured, &dir.join("backlog-drain.svg"), "deliveries/s", |m| {
        m.backlog.as_ref().map(|b| b.drain.clone())
    })?;
    backlog_chart(&measured, &dir.join("backlog-rss.svg"), "RSS, MiB", |m| m.backlog.as_ref().map(|b| b.rss.clone()))?;
    let page = docs.join("performance.md");
    let text = std::fs::read_to_string(&page).with_context(|| format!("reading {}", page.display()))?;
    let (Some(begin), Some(end)) = (text.find(BEGIN), text.find(END)) else {
        anyhow::bail!("{} has no {BEGIN} … {END} section", page.display());
    };
    let updated = format!("{}{BEGIN}\n{}{}", &text[..begin], tables(&measured), &text[end..]);
    std::fs::write(&page, updated)?;
    println!("wrote the tables into {} and the charts into {}", page.display(), dir.display());
    Ok(())
}

fn pct(part: f64, whole: Option<f64>) -> String {
    whole.filter(|w| *w > 0.0).map_or("-".into(), |w| format!("{:.0} %", 100.0 * part / w))
}

/// The markdown tables of every measured backend.
pub fn tables(measured: &[Measured]) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "\n### Fan-out: one event type to N subscribers\n");
    let _ = writeln!(
        t,
        "| backend | subscribers | events each | deliveries/s | vs 1 subscriber | vs ceiling | CPU µs / delivery | peak RSS MiB | idle CPU % | live p50 ms | live p99 ms |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|---|---|");
    for m in measured {
        let one = m.fanout.iter().find(|f| f.subscribers == 1).map(|f| f.deliveries_per_s);
        let ceiling = m.broker_ceiling.or(m.delivery_ceiling);
        for f in &m.fanout {
            let _ = writeln!(
                t,
                "| {} | {} | {} | {:.0} | {} | {} | {:.1} | {:.0} | {} | {:.2} | {:.2} |",
                m.backend,
                f.subscribers,
                f.events,
                f.deliveries_per_s,
                pct(f.deliveries_per_s, one),
                pct(f.deliveries_per_s, ceiling),
                f.cpu_us_per_delivery,
                f.rss_mib,
                f.idle_cpu_percent.map_or("-".into(), |c| format!("{c:.0}")),
                f.p50_ms,
                f.p99_ms
            );
        }
    }
    let _ = writeln!(t, "\n### The relay against the same run's ceilings\n");
    let _ = writeln!(
        t,
        "| backend | delivery path alone | broker consume + commit | relay, 1 subscriber | relay / delivery path | relay / broker | replay | replay / live | replay start s |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|");
    for m in measured {
        let live = m.fanout.iter().find(|f| f.subscribers == 1).map(|f| f.deliveries_per_s);
        let num = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            m.backend,
            num(m.delivery_ceiling),
            num(m.broker_ceiling),
            num(live),
            live.map_or("-".into(), |l| pct(l, m.delivery_ceiling)),
            live.map_or("-".into(), |l| pct(l, m.broker_ceiling)),
            num(m.replay),
            m.replay.map_or("-".into(), |r| pct(r, live)),
            m.replay_start_s.map_or("-".into(), |s| format!("{s:.2}")),
        );
    }
    let _ = writeln!(t, "\n### End to end: provider POST → subscriber received\n");
    let _ =
        writeln!(t, "| backend | max ingress/s | load | offered/s | delivered | p50 ms | p99 ms | p99.9 ms | max ms |");
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|");
    for m in measured {
        for l in &m.latency {
            let _ = writeln!(
                t,
                "| {} | {:.0} | {} % | {:.0} | {} of {} | {:.2} | {:.2} | {:.2} | {:.1} |",
                m.backend,
                m.max_ingress.unwrap_or(0.0),
                l.load_pct,
                l.offered,
                l.delivered,
                l.sent,
                l.p50_ms,
                l.p99_ms,
                l.p999_ms,
                l.max_ms
            );
        }
    }
    let _ = writeln!(t, "\n### Open keep-alive connections at the ingress\n");
    let _ = writeln!(t, "| backend | connections | RSS MiB | per 1,000 connections |");
    let _ = writeln!(t, "|---|---|---|---|");
    for m in measured {
        let base = m.connections.first().map_or(0.0, |c| c.rss_mib);
        for c in &m.connections {
            let per = if c.open == 0 {
                "-".into()
            } else {
                format!("{:.1} MiB", (c.rss_mib - base) * 1000.0 / c.open as f64)
            };
            let _ = writeln!(t, "| {} | {} | {:.1} | {} |", m.backend, c.open, c.rss_mib, per);
        }
    }
    let _ = writeln!(t, "\n### A backlog drained by one subscriber that comes back\n");
    let _ = writeln!(
        t,
        "| backend | events | published/s | disk bytes / event | ready s | drain/s | first 10 % | last 10 % | peak RSS MiB | retention |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|---|");
    for m in measured {
        let Some(b) = &m.backlog else { continue };
        let retention = match (b.retention_s, b.file_bytes_before, b.file_bytes_after) {
            (Some(s), Some(before), Some(after)) => {
                format!("all removed in {s:.1} s; file {:.2} → {:.2} GB", before as f64 / 1e9, after as f64 / 1e9)
            }
            _ => "the broker's".into(),
        };
        let _ = writeln!(
            t,
            "| {} | {} | {:.0} | {} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
            m.backend,
            b.events,
            b.publish_per_s,
            if b.disk_bytes_per_event > 0.0 { format!("{:.0}", b.disk_bytes_per_event) } else { "-".into() },
            b.ready_s,
            b.drain_rate,
            b.first_tenth_rate,
            b.last_tenth_rate,
            b.rss_max_mib,
            retention
        );
    }
    let dates: Vec<String> = measured.iter().map(|m| format!("{} {} ({} CPUs)", m.backend, m.date, m.cpus)).collect();
    let _ = writeln!(t, "\nMeasured: {}.\n", dates.join(", "));
    t
}

fn chart_root(path: &Path) -> SVGBackend<'_> {
    SVGBackend::new(path, (720, 420))
}

fn fanout_chart(measured: &[Measured], path: &Path) -> anyhow::Result<()> {
    let top = measured.iter().flat_map(|m| m.fanout.iter().map(|f| f.deliveries_per_s)).fold(1.0, f64::max);
    let root = chart_root(path).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Aggregate deliveries/s against subscribers", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((1f64..120f64).log_scale(), 0f64..top * 1.15)?;
    chart.configure_mesh().x_desc("subscribers (log scale)").y_desc("deliveries/s").draw()?;
    for (i, m) in measured.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<(f64, f64)> = m.fanout.iter().map(|f| (f.subscribers as f64, f.deliveries_per_s)).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?
            .label(m.backend.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2)));
        chart.draw_series(points.into_iter().map(|p| Circle::new(p, 4, colour.filled())))?;
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.9)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}

fn latency_chart(measured: &[Measured], path: &Path) -> anyhow::Result<()> {
    let top = measured.iter().flat_map(|m| m.latency.iter().map(|l| l.p999_ms)).fold(1.0, f64::max);
    let root = chart_root(path).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("End-to-end latency against load", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(20f64..80f64, 0f64..top * 1.15)?;
    chart.configure_mesh().x_desc("% of the maximum ingress rate").y_desc("ms, POST sent → received").draw()?;
    let mut colour_index = 0;
    for m in measured {
        for (name, width, pick) in [
            ("p50", 1, (|l: &crate::scale::Latency| l.p50_ms) as fn(&crate::scale::Latency) -> f64),
            ("p99", 2, |l| l.p99_ms),
            ("p99.9", 3, |l| l.p999_ms),
        ] {
            let colour = COLOURS[colour_index % COLOURS.len()];
            colour_index += 1;
            let points: Vec<(f64, f64)> = m.latency.iter().map(|l| (f64::from(l.load_pct), pick(l))).collect();
            chart
                .draw_series(LineSeries::new(points.clone(), colour.stroke_width(width)))?
                .label(format!("{} {name}", m.backend))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(width)));
            chart.draw_series(points.into_iter().map(|p| Circle::new(p, 3, colour.filled())))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn backlog_chart(
    measured: &[Measured],
    path: &Path,
    y: &str,
    series: impl Fn(&Measured) -> Option<Vec<(f64, f64)>>,
) -> anyhow::Result<()> {
    let all: Vec<(String, Vec<(f64, f64)>)> = measured
        .iter()
        .filter_map(|m| Some((format!("{} ({} events)", m.backend, m.backlog.as_ref()?.events), series(m)?)))
        .collect();
    let right = all.iter().flat_map(|(_, s)| s.iter().map(|p| p.0)).fold(1.0, f64::max);
    let top = all.iter().flat_map(|(_, s)| s.iter().map(|p| p.1)).fold(1.0, f64::max);
    let root = chart_root(path).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("Draining a backlog: {y} over time"), ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..right, 0f64..top * 1.15)?;
    chart.configure_mesh().x_desc("seconds since ready").y_desc(y).draw()?;
    for (i, (name, points)) in all.into_iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2)));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.9)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}

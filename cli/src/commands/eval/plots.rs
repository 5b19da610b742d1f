//! The figures of `slim eval`, drawn with plotters' SVG backend.

use std::path::Path;

use plotters::prelude::*;

/// One router's latency CDF: (latency ms, fraction) pairs.
pub struct CdfSeries {
    /// Router name.
    pub name: String,
    /// Points in increasing order.
    pub points: Vec<(f64, f64)>,
}

/// One router's point on the trade-off scatter.
pub struct TradeoffPoint {
    /// Router name.
    pub name: String,
    /// Mean latency, ms.
    pub latency_ms: f64,
    /// Mean energy per request, mJ.
    pub energy_mj: f64,
    /// Mean accuracy, %.
    pub accuracy_pct: f64,
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing: {e}")
}

/// Log-axis bounds around positive `values`, to whole decades.
fn decades(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| *v > 0.0 && v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.1, 10.0);
    }
    (
        10f64.powf(lo.log10().floor()),
        10f64.powf(hi.log10().ceil().max(lo.log10().floor() + 1.0)),
    )
}

/// A latency CDF per router, latency on a log axis.
pub fn latency_cdf(path: &Path, title: &str, series: &[CdfSeries]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (lo, hi) = decades(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..1.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("end-to-end latency, ms (log scale)")
        .y_desc("fraction of requests")
        .draw()
        .map_err(err)?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                s.points.iter().map(|&(x, y)| (x.max(lo), y)),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Accuracy against mean latency (left) and mean energy (right), one labelled point per router.
pub fn tradeoff(path: &Path, title: &str, points: &[TradeoffPoint]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1100, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 20)).map_err(err)?;
    let panels = root.split_evenly((1, 2));
    let (acc_lo, acc_hi) = points.iter().fold((100f64, 0f64), |(lo, hi), p| {
        (lo.min(p.accuracy_pct), hi.max(p.accuracy_pct))
    });
    let acc_range = (acc_lo - 1.0).floor()..(acc_hi + 1.0).ceil();
    type Axis = fn(&TradeoffPoint) -> f64;
    let axes: [(&str, Axis); 2] = [
        ("mean latency, ms (log scale)", |p| p.latency_ms),
        ("mean energy per request, mJ (log scale)", |p| p.energy_mj),
    ];
    for (panel, (label, value)) in panels.iter().zip(axes) {
        let (lo, hi) = decades(points.iter().map(value));
        let mut chart = ChartBuilder::on(panel)
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(55)
            .build_cartesian_2d((lo..hi).log_scale(), acc_range.clone())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(label)
            .y_desc("mean top-1 accuracy, %")
            .draw()
            .map_err(err)?;
        for (i, p) in points.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let at = (value(p).max(lo), p.accuracy_pct);
            chart
                .draw_series(std::iter::once(Circle::new(at, 6, color.filled())))
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    p.name.clone(),
                    at,
                    ("sans-serif", 13).into_font().color(&BLACK),
                )))
                .map_err(err)?;
        }
    }
    root.present().map_err(err)?;
    Ok(())
}

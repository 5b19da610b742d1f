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

/// One router's metric against load: (load, CI low, mean, CI high), only at loads where it
/// keeps up.
pub struct LoadSeries {
    /// Router name.
    pub name: String,
    /// Points in increasing load.
    pub points: Vec<(f64, f64, f64, f64)>,
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

/// A metric against offered load, one line per router with its 95 % confidence band.
pub fn vs_load(
    path: &Path,
    title: &str,
    y_desc: &str,
    series: &[LoadSeries],
) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (lo, hi) = decades(
        series
            .iter()
            .flat_map(|s| s.points.iter().flat_map(|p| [p.1, p.3])),
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..1.0, (lo..hi).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("offered load, fraction of the fleet's capacity")
        .y_desc(y_desc)
        .draw()
        .map_err(err)?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let mut band: Vec<(f64, f64)> = s.points.iter().map(|p| (p.0, p.1.max(lo))).collect();
        band.extend(s.points.iter().rev().map(|p| (p.0, p.3.max(lo))));
        chart
            .draw_series(std::iter::once(Polygon::new(
                band,
                color.mix(0.15).filled(),
            )))
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(
                s.points.iter().map(|p| (p.0, p.2.max(lo))),
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
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

//! The pure half of `slim demo --compare`, part one: from what each router's run collected to
//! the rows of the side-by-side table, and the table itself. No I/O, so it is unit-tested.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use slim_protocol::EnergySource;

/// One answered request, as the client saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// Client-measured end-to-end latency, ms.
    pub latency_ms: f64,
    /// Width that ran.
    pub width: f32,
    /// Energy the agent charged the result, joules.
    pub energy_j: f64,
    /// Where that figure came from.
    pub energy_source: EnergySource,
    /// Manifest top-1 of the width; `None` for a family whose weights are untrained.
    pub top1: Option<f64>,
}

/// What one router's run collected.
#[derive(Debug, Clone, Default)]
pub struct RouterRun {
    /// Name in the table.
    pub name: String,
    /// Requests sent.
    pub sent: usize,
    /// Answered with an error.
    pub errored: usize,
    /// Never answered.
    pub lost: usize,
    /// The results.
    pub answers: Vec<Answer>,
}

/// How the energy figures were obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnergyKind {
    /// The agents' energy model.
    Modelled,
    /// A sensor or counter.
    Measured,
    /// Some of each.
    Mixed,
    /// No figure.
    Unavailable,
}

impl EnergyKind {
    fn of(source: EnergySource) -> Self {
        match source {
            EnergySource::Model => Self::Modelled,
            EnergySource::None => Self::Unavailable,
            _ => Self::Measured,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Modelled => "modelled",
            Self::Measured => "measured",
            Self::Mixed => "modelled and measured",
            Self::Unavailable => "n/a",
        }
    }
}

/// Quantile `p` of `values` (reordered), as the client's summary takes it: the value at rank
/// round((n − 1) · p).
pub(super) fn quantile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let k = ((values.len() - 1) as f64 * p).round() as usize;
    *values.select_nth_unstable_by(k, f64::total_cmp).1
}

pub(super) fn p50(v: &mut [f64]) -> f64 {
    quantile(v, 0.5)
}

pub(super) fn p99(v: &mut [f64]) -> f64 {
    quantile(v, 0.99)
}

pub(super) fn mean(v: &mut [f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub sent: usize,
    pub answered: usize,
    pub errored: usize,
    pub lost: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Mean energy per result with a figure, mJ.
    pub energy_mj: f64,
    pub energy: EnergyKind,
    /// Mean manifest top-1 over results of trained families; `None` when there were none.
    pub top1: Option<f64>,
    /// Results per width × 1000.
    pub widths: BTreeMap<u16, usize>,
    /// Client-measured latencies, ms.
    pub(super) latencies: Vec<f64>,
    /// Energy per result with a figure, mJ.
    pub(super) energies_mj: Vec<f64>,
}

impl Row {
    /// Condenses one run.
    pub fn of(run: &RouterRun) -> Self {
        let mut latencies: Vec<f64> = run.answers.iter().map(|a| a.latency_ms).collect();
        let with_energy: Vec<&Answer> = run
            .answers
            .iter()
            .filter(|a| a.energy_source != EnergySource::None)
            .collect();
        let mut energies_mj: Vec<f64> = with_energy.iter().map(|a| a.energy_j * 1e3).collect();
        let kinds: Vec<EnergyKind> = with_energy
            .iter()
            .map(|a| EnergyKind::of(a.energy_source))
            .collect();
        let energy = match kinds.first() {
            None => EnergyKind::Unavailable,
            Some(k) if kinds.iter().all(|x| x == k) => *k,
            Some(_) => EnergyKind::Mixed,
        };
        let top1s: Vec<f64> = run.answers.iter().filter_map(|a| a.top1).collect();
        let mut widths = BTreeMap::new();
        for a in &run.answers {
            *widths.entry((a.width * 1000.0).round() as u16).or_default() += 1;
        }
        Self {
            name: run.name.clone(),
            sent: run.sent,
            answered: run.answers.len(),
            errored: run.errored,
            lost: run.lost,
            p50_ms: p50(&mut latencies),
            p99_ms: p99(&mut latencies),
            energy_mj: if energies_mj.is_empty() {
                f64::NAN
            } else {
                mean(&mut energies_mj)
            },
            energy,
            top1: (!top1s.is_empty()).then(|| top1s.iter().sum::<f64>() / top1s.len() as f64),
            widths,
            latencies,
            energies_mj,
        }
    }

    fn width_mix(&self) -> String {
        slim_client::load::width_mix(&self.widths, " ")
    }
}

/// The families whose accuracy the table can state, and those it cannot.
#[derive(Debug, Clone, Default)]
pub struct Families {
    /// Families with trained weights (manifest top-1 means something).
    pub trained: Vec<String>,
    /// Families with untrained weights (accuracy n/a).
    pub untrained: Vec<String>,
}

/// The side-by-side table, columns aligned, one row per router.
pub fn table(rows: &[Row], families: &Families) -> String {
    let kinds: Vec<EnergyKind> = rows
        .iter()
        .filter(|r| r.answered > 0)
        .map(|r| r.energy)
        .collect();
    let uniform = kinds.first().filter(|k| kinds.iter().all(|x| x == *k));
    let mut lines = vec![header(uniform, families)];
    lines.extend(rows.iter().map(|r| r.cells(uniform)));
    let mut out = crate::commands::columns::align_columns(&lines, usize::MAX);
    if !families.untrained.is_empty() {
        let _ = writeln!(
            out,
            "Accuracy of {}: n/a (untrained weights; the manifest cites a published figure, not a measurement), so it is not in the top-1 column.",
            families.untrained.join(", ")
        );
    }
    out
}

/// The table's header; the energy column names its kind when every row's is `uniform`.
fn header(uniform: Option<&EnergyKind>, families: &Families) -> Vec<String> {
    let energy_head = match uniform {
        Some(k) => format!("energy mJ/result ({})", k.as_str()),
        None => "energy mJ/result".to_string(),
    };
    let top1_head = if families.trained.is_empty() {
        "top-1 implied".to_string()
    } else {
        format!("top-1 implied ({})", families.trained.join(", "))
    };
    [
        "router",
        "answered/sent",
        "errors",
        "lost",
        "p50 ms",
        "p99 ms",
        &energy_head,
        &top1_head,
        "widths used",
    ]
    .map(String::from)
    .to_vec()
}

impl Row {
    /// This row's cells, in the order of [`header`]; the energy figure names its kind unless the
    /// header does (`uniform`).
    fn cells(&self, uniform: Option<&EnergyKind>) -> Vec<String> {
        let none = || "—".to_string();
        let energy = match (self.answered, uniform) {
            (0, _) => none(),
            (_, _) if self.energy == EnergyKind::Unavailable => "n/a".into(),
            (_, Some(_)) => format!("{:.2}", self.energy_mj),
            (_, None) => format!("{:.2} ({})", self.energy_mj, self.energy.as_str()),
        };
        let top1 = match self.top1 {
            Some(a) => format!("{:.2} %", 100.0 * a),
            None if self.answered > 0 => "n/a (untrained)".into(),
            None => none(),
        };
        let ms = |v: f64| {
            if self.answered > 0 {
                format!("{v:.1}")
            } else {
                none()
            }
        };
        vec![
            self.name.clone(),
            format!("{}/{}", self.answered, self.sent),
            self.errored.to_string(),
            self.lost.to_string(),
            ms(self.p50_ms),
            ms(self.p99_ms),
            energy,
            top1,
            self.width_mix(),
        ]
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in super::super) fn answers(
        latencies: &[f64],
        width: f32,
        energy_j: f64,
        top1: Option<f64>,
    ) -> Vec<Answer> {
        latencies
            .iter()
            .map(|&latency_ms| Answer {
                latency_ms,
                width,
                energy_j,
                energy_source: EnergySource::Model,
                top1,
            })
            .collect()
    }

    pub(in super::super) fn run(name: &str, answers: Vec<Answer>) -> RouterRun {
        RouterRun {
            name: name.into(),
            sent: answers.len(),
            answers,
            ..RouterRun::default()
        }
    }

    /// 200 latencies spread evenly around `centre` (±10 %).
    pub(in super::super) fn spread(centre: f64) -> Vec<f64> {
        (0..200)
            .map(|i| centre * (0.9 + 0.2 * f64::from(i) / 199.0))
            .collect()
    }

    #[test]
    fn rows_condense_latency_energy_accuracy_and_widths() {
        let mut a = answers(&[1.0, 2.0, 3.0, 4.0], 0.25, 0.010, Some(0.9));
        a.extend(answers(&[100.0], 1.0, 0.030, None));
        let row = Row::of(&RouterRun {
            lost: 1,
            ..run("greedy", a)
        });
        assert_eq!(
            (row.answered, row.lost, row.p50_ms, row.p99_ms),
            (5, 1, 3.0, 100.0)
        );
        assert!((row.energy_mj - 14.0).abs() < 1e-9, "{}", row.energy_mj);
        assert_eq!(row.energy, EnergyKind::Modelled);
        assert_eq!(row.top1, Some(0.9), "untrained results stay out of top-1");
        assert_eq!(row.width_mix(), "0.25x 80% 1.00x 20%");
    }

    #[test]
    fn the_table_lists_every_router_and_labels_energy_and_untrained_accuracy() {
        let families = Families {
            trained: vec!["digits".into()],
            untrained: vec!["cifar-slimresnet".into()],
        };
        let rows: Vec<Row> = ["random", "greedy", "ppo:efficiency"]
            .iter()
            .map(|n| Row::of(&run(n, answers(&spread(2.0), 0.5, 0.02, Some(0.97)))))
            .collect();
        let t = table(&rows, &families);
        assert!(t.contains("energy mJ/result (modelled)"), "{t}");
        assert!(t.contains("top-1 implied (digits)"), "{t}");
        assert!(
            t.contains("Accuracy of cifar-slimresnet: n/a (untrained"),
            "{t}"
        );
        for name in ["random", "greedy", "ppo:efficiency"] {
            let line = t.lines().find(|l| l.starts_with(name)).expect(name);
            assert!(
                line.contains("200/200") && line.contains("97.00 %"),
                "{line}"
            );
        }
        let untrained = Row::of(&run("random", answers(&[1.0, 2.0], 0.5, 0.02, None)));
        assert!(table(&[untrained], &Families::default()).contains("n/a (untrained)"));
    }
}

//! One metric family: its descriptor, built once at start, and the samples one scrape gives it.

use std::collections::HashMap;

use prometheus::{
    core::Desc,
    proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType},
};

/// A metric family's name, help and label names, checked and built once; each scrape fills a
/// fresh [`Samples`] from it.
#[derive(Debug)]
pub(super) struct Family {
    desc: Desc,
    kind: MetricType,
    /// Label positions in name order: Prometheus writes label pairs sorted by name.
    by_name: Vec<usize>,
}

impl Family {
    /// A counter family; its samples are the running totals the snapshot carries.
    pub(super) fn counter(name: &str, help: &str, labels: &[&str]) -> Self {
        Self::new(name, help, labels, MetricType::COUNTER)
    }

    /// A gauge family; its samples are the latest readings.
    pub(super) fn gauge(name: &str, help: &str, labels: &[&str]) -> Self {
        Self::new(name, help, labels, MetricType::GAUGE)
    }

    fn new(name: &str, help: &str, labels: &[&str], kind: MetricType) -> Self {
        let variable_labels = labels.iter().map(|l| l.to_string()).collect();
        let desc = Desc::new(name.into(), help.into(), variable_labels, HashMap::new())
            .unwrap_or_else(|e| panic!("metric {name}: {e}"));
        let mut by_name: Vec<usize> = (0..labels.len()).collect();
        by_name.sort_by_key(|&i| labels[i]);
        Self {
            desc,
            kind,
            by_name,
        }
    }

    /// The descriptor the registry checked at registration.
    pub(super) fn desc(&self) -> &Desc {
        &self.desc
    }

    /// An empty set of samples for one scrape.
    pub(super) fn samples(&self) -> Samples<'_> {
        Samples {
            family: self,
            values: HashMap::new(),
        }
    }
}

/// The samples of one [`Family`] in one scrape, by label values.
#[derive(Debug)]
pub(super) struct Samples<'a> {
    family: &'a Family,
    values: HashMap<Vec<String>, f64>,
}

impl Samples<'_> {
    /// Adds `value` to the sample labelled `labels` (in the family's label order): totals for
    /// the same labels add up.
    pub(super) fn add(&mut self, labels: &[&str], value: f64) {
        *self.sample(labels) += value;
    }

    /// Sets the sample labelled `labels` to `value`: the latest reading wins.
    pub(super) fn set(&mut self, labels: &[&str], value: f64) {
        *self.sample(labels) = value;
    }

    fn sample(&mut self, labels: &[&str]) -> &mut f64 {
        assert_eq!(
            labels.len(),
            self.family.by_name.len(),
            "label values of {}",
            self.family.desc.fq_name
        );
        self.values
            .entry(labels.iter().map(|l| l.to_string()).collect())
            .or_insert(0.0)
    }

    /// The family with this scrape's samples; the registry leaves it out when there are none.
    pub(super) fn finish(self) -> MetricFamily {
        let Family {
            desc,
            kind,
            by_name,
        } = self.family;
        let metrics = self
            .values
            .into_iter()
            .map(|(mut values, value)| {
                let labels = by_name
                    .iter()
                    .map(|&i| {
                        let mut pair = LabelPair::default();
                        pair.set_name(desc.variable_labels[i].clone());
                        pair.set_value(std::mem::take(&mut values[i]));
                        pair
                    })
                    .collect();
                let mut metric = Metric::from_label(labels);
                if *kind == MetricType::COUNTER {
                    let mut counter = Counter::default();
                    counter.set_value(value);
                    metric.set_counter(counter);
                } else {
                    let mut gauge = Gauge::default();
                    gauge.set_value(value);
                    metric.set_gauge(gauge);
                }
                metric
            })
            .collect();
        let mut family = MetricFamily::default();
        family.set_name(desc.fq_name.clone());
        family.set_help(desc.help.clone());
        family.set_field_type(*kind);
        family.set_metric(metrics);
        family
    }
}

//! The saturation figures as a table: each case's rate and its ratio to the relay anchor.

use std::fmt::Write as _;

use slim_coordinator::counters::Counters;

use super::SaturationSpec;

/// One measured case.
#[derive(Debug, Clone)]
pub struct Case {
    /// What was measured.
    pub name: String,
    /// Emulated agents, for routing cases.
    pub agents: Option<usize>,
    /// Messages published.
    pub sent: usize,
    /// Messages that arrived where they were counted.
    pub received: u64,
    /// Messages per second, first publish to last receipt.
    pub rate: f64,
    /// Requests the coordinator refused, for routing cases.
    pub refused: u64,
}

impl Case {
    pub fn anchor(name: &str, sent: usize, received: u64, rate: f64) -> Self {
        Self {
            name: name.into(),
            agents: None,
            sent,
            received,
            rate,
            refused: 0,
        }
    }

    /// A routing case; `group` holds the counters of every coordinator of the shared group
    /// (one for a lone coordinator), and a group's name lists each member's share.
    pub fn routing(
        router: &str,
        agents: usize,
        sent: usize,
        received: u64,
        rate: f64,
        group: &[Counters],
    ) -> Self {
        let name = match group {
            [_] => format!("coordinator, {router}"),
            _ => {
                let shares: Vec<String> = group.iter().map(|c| c.routed.to_string()).collect();
                format!(
                    "{} coordinators (shared group), {router}; routed {}",
                    group.len(),
                    shares.join(" + ")
                )
            }
        };
        Self {
            name,
            agents: Some(agents),
            sent,
            received,
            rate,
            refused: group.iter().map(Counters::refused_total).sum(),
        }
    }
}

/// Every case of one run, in order.
#[derive(Debug, Clone)]
pub struct SaturationReport {
    broker: String,
    model: String,
    request_bytes: usize,
    cases: Vec<Case>,
}

impl SaturationReport {
    pub fn new(broker: &str, spec: &SaturationSpec) -> Self {
        Self {
            broker: broker.into(),
            model: spec.model.name.clone(),
            request_bytes: spec.samples.first().map_or(0, |s| s.input.data.len()),
            cases: Vec::new(),
        }
    }

    pub fn push(&mut self, case: Case) {
        self.cases.push(case);
    }

    pub fn cases(&self) -> &[Case] {
        &self.cases
    }

    /// The do-nothing relay's rate, the anchor of every ratio.
    pub fn relay_rate(&self) -> Option<f64> {
        self.cases
            .iter()
            .find(|c| c.name == "do-nothing relay")
            .map(|c| c.rate)
    }

    /// A markdown table: rate, ratio to the relay, and time per message.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let relay = self.relay_rate();
        let _ = writeln!(
            md,
            "Broker {}; {} requests ({} tensor bytes each), QoS 1, one publisher.\n",
            self.broker, self.model, self.request_bytes
        );
        let _ = writeln!(
            md,
            "| case | emulated agents | sent | arrived | refused | per second | × relay | µs per message |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|"
        );
        for c in &self.cases {
            let ratio = relay.map_or("—".into(), |r| format!("{:.2}", c.rate / r));
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {:.0} | {ratio} | {:.1} |",
                c.name,
                c.agents.map_or("—".into(), |a| a.to_string()),
                c.sent,
                c.received,
                c.refused,
                c.rate,
                1e6 / c.rate.max(1e-9)
            );
        }
        md
    }
}

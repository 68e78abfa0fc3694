//! The operator's Prometheus metrics: reconciliations and failures per
//! kind, and whether this replica leads. Served as text at `/metrics`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    reconciles: [AtomicU64; 3],
    failures: [AtomicU64; 3],
    pub leader: AtomicBool,
}

/// The kinds the operator reconciles, in metric order.
pub const KINDS: [&str; 3] = ["Agent", "SiteDirector", "ComputingElement"];

fn index(kind: &str) -> usize {
    KINDS.iter().position(|k| *k == kind).unwrap_or(0)
}

impl Metrics {
    pub fn reconciled(&self, kind: &str) {
        self.reconciles[index(kind)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn failed(&self, kind: &str) {
        self.failures[index(kind)].fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# HELP dirac_operator_reconciliations_total Reconciliations started, by kind.\n\
             # TYPE dirac_operator_reconciliations_total counter\n",
        );
        for (i, k) in KINDS.iter().enumerate() {
            out.push_str(&format!(
                "dirac_operator_reconciliations_total{{kind=\"{k}\"}} {}\n",
                self.reconciles[i].load(Ordering::Relaxed)
            ));
        }
        out.push_str(
            "# HELP dirac_operator_reconcile_failures_total Reconciliations that failed, by kind.\n\
             # TYPE dirac_operator_reconcile_failures_total counter\n",
        );
        for (i, k) in KINDS.iter().enumerate() {
            out.push_str(&format!(
                "dirac_operator_reconcile_failures_total{{kind=\"{k}\"}} {}\n",
                self.failures[i].load(Ordering::Relaxed)
            ));
        }
        out.push_str(&format!(
            "# HELP dirac_operator_leader 1 when this replica holds the lease.\n\
             # TYPE dirac_operator_leader gauge\ndirac_operator_leader {}\n",
            u8::from(self.leader.load(Ordering::Relaxed))
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_as_prometheus_text() {
        let m = Metrics::default();
        m.reconciled("Agent");
        m.reconciled("Agent");
        m.failed("SiteDirector");
        m.leader.store(true, Ordering::Relaxed);
        let text = m.render();
        assert!(
            text.contains("dirac_operator_reconciliations_total{kind=\"Agent\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("dirac_operator_reconcile_failures_total{kind=\"SiteDirector\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("dirac_operator_leader 1\n"), "{text}");
        assert!(text.lines().filter(|l| l.starts_with("# TYPE")).count() == 3);
    }
}

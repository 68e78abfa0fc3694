//! How many pilots a queue gets this cycle: DIRAC's rule plus the guards
//! against pilot flooding. Pure, so it is property-tested.

use dirac_ce::Slots;

/// A queue's limits from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Pilots waiting or running at once (MaxTotalJobs).
    pub max_total: u64,
    /// Pilots waiting at once (MaxWaitingJobs; 0 means MaxTotalJobs).
    pub max_waiting: u64,
}

/// What the director sees of a queue at the start of a cycle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observed {
    /// Pilots in PilotAgentsDB not yet running (Submitted, Waiting, Scheduled).
    pub waiting_pilots: u64,
    /// Pilots in PilotAgentsDB in any transient state.
    pub active_pilots: u64,
    /// The CE's own count, when it gives one.
    pub ce: Option<Slots>,
    /// Waiting jobs that this queue's pilots could run.
    pub demand: u64,
}

/// Per-queue memory between cycles: back-off after failures and ramp-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueMemory {
    /// The queue is skipped while the cycle number is below this.
    pub skip_until: u64,
    /// Failures in a row.
    pub failures: u32,
    /// Most pilots the next cycle may submit (grows after successes).
    pub ramp: u64,
}

/// The director's knobs that the plan uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Knobs {
    pub max_per_cycle: u64,
    pub initial_per_cycle: u64,
    pub failed_queue_cycle_factor: u64,
}

impl QueueMemory {
    pub fn new(knobs: &Knobs) -> Self {
        QueueMemory {
            skip_until: 0,
            failures: 0,
            ramp: knobs.initial_per_cycle.min(knobs.max_per_cycle).max(1),
        }
    }

    /// After a cycle that submitted `submitted` pilots without a CE failure:
    /// a queue that used its whole ramp may double it.
    pub fn succeeded(&mut self, submitted: u64, knobs: &Knobs) {
        self.failures = 0;
        if submitted >= self.ramp {
            self.ramp = (self.ramp.saturating_mul(2))
                .min(knobs.max_per_cycle)
                .max(1);
        }
    }

    /// After the CE failed: skip the queue for `factor` cycles, doubling
    /// with each failure in a row up to 8 times `factor`; ramp from the start.
    pub fn failed(&mut self, cycle: u64, knobs: &Knobs) {
        self.failures = self.failures.saturating_add(1);
        let factor = knobs.failed_queue_cycle_factor;
        let backoff = factor
            .saturating_mul(1u64 << (self.failures - 1).min(3))
            .min(factor.saturating_mul(8));
        self.skip_until = cycle.saturating_add(backoff).saturating_add(1);
        self.ramp = knobs.initial_per_cycle.min(knobs.max_per_cycle).max(1);
    }

    pub fn skipped(&self, cycle: u64) -> bool {
        cycle < self.skip_until
    }
}

/// Free slots: from the CE's count when it gives one, else from
/// PilotAgentsDB: min(MaxTotalJobs − active, MaxWaitingJobs − waiting).
pub fn slots(limits: Limits, seen: &Observed) -> u64 {
    let max_waiting = if limits.max_waiting == 0 {
        limits.max_total
    } else {
        limits.max_waiting
    };
    let (waiting, active) = match seen.ce {
        // Either count may lag behind the other: trust the larger.
        Some(ce) => (
            ce.waiting.max(seen.waiting_pilots),
            (ce.waiting + ce.running).max(seen.active_pilots),
        ),
        None => (seen.waiting_pilots, seen.active_pilots),
    };
    limits
        .max_total
        .saturating_sub(active)
        .min(max_waiting.saturating_sub(waiting))
}

/// Pilots to submit: min(max per cycle, ramp, slots, demand − waiting
/// pilots). No demand, no pilots: a pilot that waits already will take a
/// waiting job, so it counts against the demand.
pub fn to_submit(limits: Limits, seen: &Observed, memory: &QueueMemory, knobs: &Knobs) -> u64 {
    let waiting = seen.waiting_pilots.max(seen.ce.map_or(0, |c| c.waiting));
    let need = seen.demand.saturating_sub(waiting);
    knobs
        .max_per_cycle
        .min(memory.ramp)
        .min(slots(limits, seen))
        .min(need)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KNOBS: Knobs = Knobs {
        max_per_cycle: 100,
        initial_per_cycle: 10,
        failed_queue_cycle_factor: 10,
    };

    #[test]
    fn dirac_rule() {
        let limits = Limits {
            max_total: 10,
            max_waiting: 4,
        };
        let mut m = QueueMemory::new(&KNOBS);
        m.ramp = 100;
        let seen = Observed {
            waiting_pilots: 1,
            active_pilots: 5,
            ce: None,
            demand: 100,
        };
        // min(10 − 5, 4 − 1) = 3
        assert_eq!(to_submit(limits, &seen, &m, &KNOBS), 3);
        // No jobs: no pilots, whatever the slots.
        let idle = Observed { demand: 0, ..seen };
        assert_eq!(to_submit(limits, &idle, &m, &KNOBS), 0);
        // Two jobs and one waiting pilot: one more pilot.
        let two = Observed { demand: 2, ..seen };
        assert_eq!(to_submit(limits, &two, &m, &KNOBS), 1);
        // The CE counts more waiting pilots than the database: trusted.
        let ce = Observed {
            ce: Some(Slots {
                waiting: 4,
                running: 0,
            }),
            ..seen
        };
        assert_eq!(to_submit(limits, &ce, &m, &KNOBS), 0);
    }

    #[test]
    fn ramp_up_and_back_off() {
        let mut m = QueueMemory::new(&KNOBS);
        assert_eq!(m.ramp, 10);
        m.succeeded(10, &KNOBS);
        assert_eq!(m.ramp, 20);
        m.succeeded(3, &KNOBS);
        assert_eq!(m.ramp, 20, "a queue that did not use its ramp keeps it");
        for _ in 0..5 {
            m.succeeded(m.ramp, &KNOBS);
        }
        assert_eq!(m.ramp, 100, "capped at MaxPilotsPerCycle");
        m.failed(7, &KNOBS);
        assert_eq!((m.ramp, m.skip_until), (10, 18));
        assert!(m.skipped(17) && !m.skipped(18));
        m.failed(18, &KNOBS);
        assert_eq!(m.skip_until, 18 + 20 + 1);
        for c in 0..10 {
            m.failed(c, &KNOBS);
        }
        assert_eq!(m.skip_until, 9 + 80 + 1, "back-off capped at 8 × factor");
        m.succeeded(0, &KNOBS);
        assert_eq!(m.failures, 0);
    }

    fn observed() -> impl Strategy<Value = (Limits, Observed, u64)> {
        (
            0u64..200,
            0u64..200,
            0u64..300,
            0u64..300,
            proptest::option::of((0u64..300, 0u64..300)),
            0u64..1000,
            1u64..200,
        )
            .prop_map(|(mt, mw, w, extra, ce, demand, ramp)| {
                (
                    Limits {
                        max_total: mt,
                        max_waiting: mw,
                    },
                    Observed {
                        waiting_pilots: w,
                        active_pilots: w + extra,
                        ce: ce.map(|(waiting, running)| Slots { waiting, running }),
                        demand,
                    },
                    ramp,
                )
            })
    }

    proptest! {
        #[test]
        fn never_more_than_any_bound((limits, seen, ramp) in observed()) {
            let memory = QueueMemory { skip_until: 0, failures: 0, ramp };
            let n = to_submit(limits, &seen, &memory, &KNOBS);
            prop_assert!(n <= KNOBS.max_per_cycle);
            prop_assert!(n <= ramp);
            prop_assert!(n <= seen.demand.saturating_sub(seen.waiting_pilots));
            prop_assert!(seen.active_pilots + n <= limits.max_total.max(seen.active_pilots));
            let max_waiting = if limits.max_waiting == 0 { limits.max_total } else { limits.max_waiting };
            prop_assert!(seen.waiting_pilots + n <= max_waiting.max(seen.waiting_pilots));
        }

        /// Over many cycles, with pilots that never start, the queue never
        /// holds more waiting pilots than there are waiting jobs.
        #[test]
        fn no_flooding_over_cycles(
            demand in 0u64..500,
            max_total in 1u64..1000,
            max_waiting in 0u64..1000,
            cycles in 1usize..30,
        ) {
            let limits = Limits { max_total, max_waiting };
            let mut memory = QueueMemory::new(&KNOBS);
            let mut waiting = 0u64;
            for _ in 0..cycles {
                let seen = Observed { waiting_pilots: waiting, active_pilots: waiting, ce: None, demand };
                let n = to_submit(limits, &seen, &memory, &KNOBS);
                waiting += n;
                memory.succeeded(n, &KNOBS);
                prop_assert!(waiting <= demand);
                prop_assert!(waiting <= max_total);
            }
        }
    }
}

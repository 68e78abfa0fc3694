//! The director against fake CEs and an in-memory registry (stand-ins for
//! the real connectors, which have their own tests).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::*;

#[derive(Default)]
struct FakeRegistry {
    demand: Mutex<HashMap<String, u64>>,
    pilots: Mutex<Vec<(NewPilot, ActivePilot)>>,
    secrets: AtomicU64,
}

#[async_trait::async_trait]
impl Registry for FakeRegistry {
    async fn demand(&self, r: &ResourceDescription) -> Result<u64, String> {
        let ce = r.grid_ce.clone().unwrap_or_default();
        Ok(self
            .demand
            .lock()
            .map_err(|e| e.to_string())?
            .get(&ce)
            .copied()
            .unwrap_or(0))
    }
    async fn active_pilots(&self, ce: &str, queue: &str) -> Result<Vec<ActivePilot>, String> {
        let pilots = self.pilots.lock().map_err(|e| e.to_string())?;
        Ok(pilots
            .iter()
            .filter(|(n, a)| {
                n.ce == ce
                    && n.queue == queue
                    && !["Done", "Failed", "Aborted"].contains(&a.status.as_str())
            })
            .map(|(_, a)| a.clone())
            .collect())
    }
    async fn pilot_secrets(
        &self,
        _: &str,
        _: &str,
        n: usize,
        _: u64,
    ) -> Result<Vec<String>, String> {
        self.secrets.fetch_add(n as u64, Ordering::SeqCst);
        Ok((0..n).map(|i| format!("secret{i}")).collect())
    }
    async fn register_pilots(&self, new: &[NewPilot]) -> Result<Vec<Result<(), String>>, String> {
        let mut pilots = self.pilots.lock().map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for p in new {
            if pilots.iter().any(|(n, _)| n.stamp == p.stamp) {
                out.push(Err("registered already".into()));
                continue;
            }
            pilots.push((
                p.clone(),
                ActivePilot {
                    stamp: p.stamp.clone(),
                    reference: p.reference.clone(),
                    status: "Submitted".into(),
                    last_update: dirac_core::time::now(),
                },
            ));
            out.push(Ok(()));
        }
        Ok(out)
    }
    async fn set_pilot_references(&self, refs: &[(String, String)]) -> Result<(), String> {
        let mut pilots = self.pilots.lock().map_err(|e| e.to_string())?;
        for (stamp, reference) in refs {
            if let Some((n, a)) = pilots.iter_mut().find(|(n, _)| &n.stamp == stamp) {
                n.reference = reference.clone();
                a.reference = reference.clone();
            }
        }
        Ok(())
    }
    async fn set_pilot_status(&self, stamp: &str, status: &str, _: &str) -> Result<(), String> {
        let mut pilots = self.pilots.lock().map_err(|e| e.to_string())?;
        let (_, a) = pilots
            .iter_mut()
            .find(|(n, _)| n.stamp == stamp)
            .ok_or("unknown pilot")?;
        a.status = status.into();
        a.last_update = dirac_core::time::now();
        Ok(())
    }
}

impl FakeRegistry {
    fn statuses(&self, ce: &str) -> Vec<String> {
        let pilots = self.pilots.lock().expect("lock");
        pilots
            .iter()
            .filter(|(n, _)| n.ce == ce)
            .map(|(_, a)| a.status.clone())
            .collect()
    }
    fn age_all(&self) {
        let mut pilots = self.pilots.lock().expect("lock");
        for (_, a) in pilots.iter_mut() {
            a.last_update = dirac_core::time::ago(100_000);
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Ok,
    Error,
    Hang,
}

struct FakeCe {
    mode: Mutex<Mode>,
    calls: AtomicU64,
    state: Mutex<PilotState>,
}

impl FakeCe {
    fn new(mode: Mode) -> Arc<Self> {
        Arc::new(FakeCe {
            mode: Mutex::new(mode),
            calls: AtomicU64::new(0),
            state: Mutex::new(PilotState::Waiting),
        })
    }
    async fn behave(&self) -> Result<(), CeError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mode = *self.mode.lock().expect("lock");
        match mode {
            Mode::Ok => Ok(()),
            Mode::Error => Err(CeError::Unreachable("connection refused".into())),
            Mode::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            }
        }
    }
}

#[async_trait::async_trait]
impl ComputingElement for FakeCe {
    fn grid_type(&self) -> &'static str {
        "Fake"
    }
    async fn submit(&self, pilots: &[PilotJob]) -> Result<Vec<Result<String, CeError>>, CeError> {
        self.behave().await?;
        Ok(pilots
            .iter()
            .map(|p| Ok(format!("fake://ce/{}", p.stamp)))
            .collect())
    }
    async fn status(&self, refs: &[String]) -> Result<HashMap<String, PilotState>, CeError> {
        self.behave().await?;
        let s = *self.state.lock().expect("lock");
        Ok(refs.iter().map(|r| (r.clone(), s)).collect())
    }
    async fn kill(&self, _: &[String]) -> Result<(), CeError> {
        self.behave().await
    }
    async fn logs(&self, _: &str) -> Result<String, CeError> {
        Ok(String::new())
    }
}

fn queue(ce_name: &str, ce: Arc<FakeCe>, max_total: u64) -> QueueSpec {
    QueueSpec {
        site: "LCG.Test.org".into(),
        ce_name: ce_name.into(),
        ce_type: "fake".into(),
        queue: "q".into(),
        vo: "vo".into(),
        limits: Limits {
            max_total,
            max_waiting: 0,
        },
        resource: ResourceDescription {
            vo: "vo".into(),
            grid_ce: Some(ce_name.into()),
            ..Default::default()
        },
        ce,
        kill_on_stop: false,
    }
}

fn settings() -> Settings {
    Settings {
        knobs: Knobs {
            max_per_cycle: 100,
            initial_per_cycle: 2,
            failed_queue_cycle_factor: 3,
        },
        status_every: 1,
        ce_timeout: Duration::from_millis(200),
        unknown_grace_s: 600,
        polling: Duration::from_millis(10),
        concurrency: 8,
    }
}

#[tokio::test]
async fn a_failing_or_hanging_ce_backs_off_and_the_others_proceed() {
    let registry = Arc::new(FakeRegistry::default());
    for ce in ["bad", "slow", "good"] {
        registry
            .demand
            .lock()
            .expect("lock")
            .insert(ce.into(), 1000);
    }
    let (bad, slow, good) = (
        FakeCe::new(Mode::Error),
        FakeCe::new(Mode::Hang),
        FakeCe::new(Mode::Ok),
    );
    let mut sd = SiteDirector::new(
        vec![
            queue("bad", bad.clone(), 1000),
            queue("slow", slow.clone(), 1000),
            queue("good", good.clone(), 1000),
        ],
        registry.clone(),
        settings(),
    );
    let started = std::time::Instant::now();
    let first = sd.cycle().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a hanging CE does not hold the cycle"
    );
    assert!(
        matches!(first.outcomes[0].1, QueueOutcome::CeFailed(_)),
        "{first:?}"
    );
    assert!(
        matches!(&first.outcomes[1].1, QueueOutcome::CeFailed(e) if e.contains("timed out")),
        "{first:?}"
    );
    assert_eq!(
        first.outcomes[2].1,
        QueueOutcome::Submitted {
            submitted: 2,
            refused: 0
        }
    );
    // Back-off: the failed queues are not even asked for three cycles; the
    // good queue ramps up 2 → 4 → 8.
    let calls = (
        bad.calls.load(Ordering::SeqCst),
        slow.calls.load(Ordering::SeqCst),
    );
    for expected in [4, 8, 16] {
        let r = sd.cycle().await;
        assert_eq!(r.outcomes[0].1, QueueOutcome::Skipped);
        assert_eq!(r.outcomes[1].1, QueueOutcome::Skipped);
        assert_eq!(
            r.outcomes[2].1,
            QueueOutcome::Submitted {
                submitted: expected,
                refused: 0
            }
        );
    }
    assert_eq!(
        (
            bad.calls.load(Ordering::SeqCst),
            slow.calls.load(Ordering::SeqCst)
        ),
        calls
    );
    // The CE recovers: the queue is tried again and starts from the initial ramp.
    *bad.mode.lock().expect("lock") = Mode::Ok;
    let r = sd.cycle().await;
    assert_eq!(
        r.outcomes[0].1,
        QueueOutcome::Submitted {
            submitted: 2,
            refused: 0
        }
    );
}

#[tokio::test]
async fn never_more_pilots_than_waiting_jobs_and_none_without_jobs() {
    let registry = Arc::new(FakeRegistry::default());
    registry.demand.lock().expect("lock").insert("ce".into(), 7);
    let ce = FakeCe::new(Mode::Ok);
    let mut sd = SiteDirector::new(
        vec![queue("ce", ce.clone(), 1000)],
        registry.clone(),
        settings(),
    );
    for _ in 0..10 {
        sd.cycle().await;
    }
    assert_eq!(
        registry.statuses("ce").len(),
        7,
        "one pilot per waiting job, however many cycles"
    );
    // The jobs are gone: no more pilots, and the CE is not even asked.
    registry.demand.lock().expect("lock").insert("ce".into(), 0);
    let calls = ce.calls.load(Ordering::SeqCst);
    let mut s = settings();
    s.status_every = 1000;
    let mut idle = SiteDirector::new(vec![queue("ce", ce.clone(), 1000)], registry.clone(), s);
    idle.cycle = 1;
    let r = idle.cycle().await;
    assert_eq!(r.outcomes[0].1, QueueOutcome::Idle);
    assert_eq!(ce.calls.load(Ordering::SeqCst), calls);
}

#[tokio::test]
async fn pilot_states_follow_the_ce_and_unknown_pilots_end_aborted() {
    let registry = Arc::new(FakeRegistry::default());
    registry.demand.lock().expect("lock").insert("ce".into(), 2);
    let ce = FakeCe::new(Mode::Ok);
    let mut sd = SiteDirector::new(
        vec![queue("ce", ce.clone(), 10)],
        registry.clone(),
        settings(),
    );
    let r = sd.cycle().await;
    assert_eq!(r.status_updates, 2);
    assert_eq!(registry.statuses("ce"), ["Waiting", "Waiting"]);
    *ce.state.lock().expect("lock") = PilotState::Running;
    sd.poll_states().await;
    assert_eq!(registry.statuses("ce"), ["Running", "Running"]);
    // The CE forgets them: Unknown first, Aborted once the grace period passed.
    *ce.state.lock().expect("lock") = PilotState::Unknown;
    sd.poll_states().await;
    assert_eq!(registry.statuses("ce"), ["Unknown", "Unknown"]);
    sd.poll_states().await;
    assert_eq!(
        registry.statuses("ce"),
        ["Unknown", "Unknown"],
        "still within the grace period"
    );
    registry.age_all();
    sd.poll_states().await;
    assert_eq!(registry.statuses("ce"), ["Aborted", "Aborted"]);
}

/// A director killed while its CE call hangs: the pilots of that cycle are
/// in PilotAgentsDB already (none lost), a new director counts them against
/// the demand (no duplicates), and the state poll ends them once their CE
/// turns out not to know them.
#[tokio::test]
async fn a_director_killed_mid_cycle_loses_and_duplicates_nothing() {
    let registry = Arc::new(FakeRegistry::default());
    registry.demand.lock().expect("lock").insert("ce".into(), 3);
    let ce = FakeCe::new(Mode::Hang);
    let mut s = settings();
    s.ce_timeout = Duration::from_secs(3600);
    s.knobs.initial_per_cycle = 100;
    let mut sd = SiteDirector::new(
        vec![queue("ce", ce.clone(), 100)],
        registry.clone(),
        s.clone(),
    );
    // "kill": the cycle is dropped while the submission hangs.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), sd.cycle())
            .await
            .is_err()
    );
    assert_eq!(
        registry.statuses("ce"),
        ["Submitted", "Submitted", "Submitted"]
    );

    // A new director: the recorded pilots count as waiting; nothing more.
    *ce.mode.lock().expect("lock") = Mode::Ok;
    *ce.state.lock().expect("lock") = PilotState::Unknown;
    let mut next = SiteDirector::new(vec![queue("ce", ce.clone(), 100)], registry.clone(), s);
    let r = next.cycle().await;
    assert_eq!(r.outcomes[0].1, QueueOutcome::Idle);
    let stamps: Vec<String> = {
        let pilots = registry.pilots.lock().expect("lock");
        pilots.iter().map(|(n, _)| n.stamp.clone()).collect()
    };
    let unique: std::collections::BTreeSet<&String> = stamps.iter().collect();
    assert_eq!(
        (stamps.len(), unique.len()),
        (3, 3),
        "none registered twice"
    );
    assert_eq!(registry.statuses("ce"), ["Unknown", "Unknown", "Unknown"]);
    registry.age_all();
    next.poll_states().await;
    assert_eq!(registry.statuses("ce"), ["Aborted", "Aborted", "Aborted"]);
    // With them gone, the demand gets pilots again.
    let r = next.cycle().await;
    assert_eq!(
        r.outcomes[0].1,
        QueueOutcome::Submitted {
            submitted: 3,
            refused: 0
        }
    );
}

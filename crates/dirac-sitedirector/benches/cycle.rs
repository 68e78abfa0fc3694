//! One SiteDirector cycle over 1,000 queues served by 100 CEs whose every
//! call takes 50 ms (a remote CE's latency), with an in-memory registry:
//! submission to every queue plus a state poll (target < 5 s).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use dirac_ce::{CeError, ComputingElement, PilotJob, PilotState};
use dirac_matcher::ResourceDescription;
use dirac_sitedirector::plan::{Knobs, Limits};
use dirac_sitedirector::{ActivePilot, NewPilot, QueueSpec, Registry, Settings, SiteDirector};

const LATENCY: Duration = Duration::from_millis(50);

/// A CE that answers everything after `LATENCY`.
struct SlowCe;

#[async_trait::async_trait]
impl ComputingElement for SlowCe {
    fn grid_type(&self) -> &'static str {
        "Fake"
    }
    async fn submit(&self, pilots: &[PilotJob]) -> Result<Vec<Result<String, CeError>>, CeError> {
        tokio::time::sleep(LATENCY).await;
        Ok(pilots
            .iter()
            .map(|p| Ok(format!("fake://{}", p.stamp)))
            .collect())
    }
    async fn status(&self, refs: &[String]) -> Result<HashMap<String, PilotState>, CeError> {
        tokio::time::sleep(LATENCY).await;
        Ok(refs
            .iter()
            .map(|r| (r.clone(), PilotState::Waiting))
            .collect())
    }
    async fn kill(&self, _: &[String]) -> Result<(), CeError> {
        Ok(())
    }
    async fn logs(&self, _: &str) -> Result<String, CeError> {
        Ok(String::new())
    }
}

/// Demand 5 per queue; pilots kept per (ce, queue).
#[derive(Default)]
struct MemRegistry {
    pilots: Mutex<HashMap<(String, String), Vec<ActivePilot>>>,
    secrets: AtomicU64,
}

#[async_trait::async_trait]
impl Registry for MemRegistry {
    async fn demand(&self, _: &ResourceDescription) -> Result<u64, String> {
        Ok(5)
    }
    async fn active_pilots(&self, ce: &str, queue: &str) -> Result<Vec<ActivePilot>, String> {
        let p = self.pilots.lock().map_err(|e| e.to_string())?;
        Ok(p.get(&(ce.to_string(), queue.to_string()))
            .cloned()
            .unwrap_or_default())
    }
    async fn pilot_secrets(
        &self,
        _: &str,
        _: &str,
        n: usize,
        _: u64,
    ) -> Result<Vec<String>, String> {
        self.secrets.fetch_add(n as u64, Ordering::Relaxed);
        Ok(vec!["s".to_string(); n])
    }
    async fn register_pilots(&self, new: &[NewPilot]) -> Result<Vec<Result<(), String>>, String> {
        let mut p = self.pilots.lock().map_err(|e| e.to_string())?;
        for n in new {
            p.entry((n.ce.clone(), n.queue.clone()))
                .or_default()
                .push(ActivePilot {
                    stamp: n.stamp.clone(),
                    reference: n.reference.clone(),
                    status: "Submitted".into(),
                    last_update: String::new(),
                });
        }
        Ok(vec![Ok(()); new.len()])
    }
    async fn set_pilot_references(&self, _: &[(String, String)]) -> Result<(), String> {
        Ok(())
    }
    async fn set_pilot_status(&self, _: &str, _: &str, _: &str) -> Result<(), String> {
        Ok(())
    }
}

fn director() -> (SiteDirector, Arc<MemRegistry>) {
    let ces: Vec<Arc<dyn ComputingElement>> = (0..100)
        .map(|_| Arc::new(SlowCe) as Arc<dyn ComputingElement>)
        .collect();
    let queues = (0..1000)
        .map(|i| QueueSpec {
            site: format!("LCG.Site{}.org", i % 100),
            ce_name: format!("ce{}.example.org", i % 100),
            ce_type: "fake".into(),
            queue: format!("q{i}"),
            vo: "vo".into(),
            limits: Limits {
                max_total: 100,
                max_waiting: 20,
            },
            resource: ResourceDescription {
                vo: "vo".into(),
                ..Default::default()
            },
            ce: ces[i % 100].clone(),
            kill_on_stop: false,
        })
        .collect();
    let registry = Arc::new(MemRegistry::default());
    let settings = Settings {
        knobs: Knobs {
            max_per_cycle: 100,
            initial_per_cycle: 10,
            failed_queue_cycle_factor: 10,
        },
        status_every: 1,
        ce_timeout: Duration::from_secs(60),
        unknown_grace_s: 3600,
        polling: Duration::from_secs(60),
        concurrency: 100,
    };
    (
        SiteDirector::new(queues, registry.clone(), settings),
        registry,
    )
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("site_director");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("cycle_1000_queues_100_ces_50ms", |b| {
        b.iter_batched(
            director,
            |(mut sd, registry)| {
                let report = rt.block_on(sd.cycle());
                assert_eq!(
                    report.submitted(),
                    5000,
                    "5 pilots for each of 1,000 queues"
                );
                assert_eq!(registry.secrets.load(Ordering::Relaxed), 5000);
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

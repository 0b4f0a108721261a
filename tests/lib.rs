//! Shared by the integration tests beside this file: the five stages started in-process,
//! each with its own NATS connection, configuration and telemetry, stopped on drop.
//!
//! - `heal_end_to_end.rs`: a crash and a hang injected through chaos are healed, with the
//!   whole chain in the audit stream under one correlation id.
//! - `bad_input.rs`: garbage on every input subject is dead-lettered and counted, and every
//!   stage keeps working.
//! - `attack_burst.rs`: chaos attacks a demo container, the detector opens and clears an
//!   `attack_burst` under the run id.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use immune_nats::Stage;
use immune_runtime::shutdown::ShutdownTrigger;
use immune_runtime::{BusConfig, Shutdown, Telemetry};
use tokio::task::JoinHandle;

/// Configuration of the five stages for one test: one NATS server, one project.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub collector: immune_collector::Config,
    pub detector: immune_detector::Config,
    pub decider: immune_decider::Config,
    pub executor: immune_executor::Config,
    pub chaos: immune_chaos::Config,
}

impl PipelineConfig {
    /// Defaults, pointed at `nats_url`, acting only on containers of `project`; a short
    /// cooldown so that one test can heal several faults in a row.
    pub fn new(nats_url: &str, project: &str) -> Self {
        let nats = BusConfig {
            url: nats_url.to_string(),
            ..Default::default()
        };
        let project = Some(project.to_string());
        let mut decider = immune_decider::Config {
            nats: nats.clone(),
            ..Default::default()
        };
        decider.policy.cooldown_ms = 2_000;
        decider.policy.verify_deadline_ms = 20_000;
        Self {
            collector: immune_collector::Config {
                nats: nats.clone(),
                project: project.clone(),
                ..Default::default()
            },
            detector: immune_detector::Config {
                nats: nats.clone(),
                ..Default::default()
            },
            decider,
            executor: immune_executor::Config {
                nats: nats.clone(),
                project: project.clone(),
                ..Default::default()
            },
            chaos: immune_chaos::Config {
                nats,
                project,
                ..Default::default()
            },
        }
    }
}

/// The five stages running as tasks of this test's runtime.
#[derive(Debug)]
pub struct Pipeline {
    trigger: Option<ShutdownTrigger>,
    tasks: Vec<(Stage, JoinHandle<Result<(), String>>)>,
    pub telemetry: HashMap<Stage, Telemetry>,
}

impl Pipeline {
    pub fn start(config: PipelineConfig) -> Pipeline {
        let (trigger, shutdown) = Shutdown::new();
        let mut pipeline = Pipeline {
            trigger: Some(trigger),
            tasks: Vec::new(),
            telemetry: HashMap::new(),
        };
        let c = config;
        pipeline.launch(Stage::Collector, &shutdown, |t, s| {
            immune_collector::run(c.collector, t, s)
        });
        pipeline.launch(Stage::Detector, &shutdown, |t, s| {
            immune_detector::run(c.detector, t, s)
        });
        pipeline.launch(Stage::Decider, &shutdown, |t, s| {
            immune_decider::run(c.decider, t, s)
        });
        pipeline.launch(Stage::Executor, &shutdown, |t, s| {
            immune_executor::run(c.executor, t, s)
        });
        pipeline.launch(Stage::Chaos, &shutdown, |t, s| {
            immune_chaos::run(c.chaos, t, s)
        });
        pipeline
    }

    fn launch<F, E>(
        &mut self,
        stage: Stage,
        shutdown: &Shutdown,
        run: impl FnOnce(Telemetry, Shutdown) -> F,
    ) where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let telemetry = Telemetry::new(stage);
        self.telemetry.insert(stage, telemetry.clone());
        let running = run(telemetry, shutdown.clone());
        let task = tokio::spawn(async move { running.await.map_err(|e| e.to_string()) });
        self.tasks.push((stage, task));
    }

    pub fn telemetry(&self, stage: Stage) -> &Telemetry {
        &self.telemetry[&stage]
    }

    /// Asks every stage to stop and checks that each returned cleanly and in time.
    pub async fn stop(mut self) {
        if let Some(trigger) = self.trigger.take() {
            trigger.trigger();
        }
        for (stage, task) in std::mem::take(&mut self.tasks) {
            let result = tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .unwrap_or_else(|_| panic!("{stage} did not stop within 20 s of shutdown"));
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("{stage} ended with an error: {e}"),
                Err(e) => panic!("{stage} panicked: {e}"),
            }
        }
    }
}

/// A bus connection as a client (CLI, dashboard) has it; it also provisions the streams.
pub async fn client_bus(nats_url: &str) -> immune_runtime::Bus {
    immune_runtime::Bus::connect_client(&BusConfig::at(nats_url))
        .await
        .expect("test client connects to nats-server")
}

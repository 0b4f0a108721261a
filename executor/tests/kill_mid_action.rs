//! The real `immune-executor` binary is SIGKILLed in the middle of a restart and started
//! again: the redelivered request must not restart the container a second time, and exactly
//! one result must be published.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{next_result, request, starts_between, stored_results, unix_now, Cleanup, World};
use immune_nats::{ActionKind, ActionOutcome};
use immune_testkit::{within, DemoContainer, DemoSpec};

fn spawn_executor(config: &std::path::Path, instance: &str, log: &std::path::Path) -> Child {
    let log = std::fs::File::create(log).expect("executor log file");
    Command::new(env!("CARGO_BIN_EXE_immune-executor"))
        .arg("--config")
        .arg(config)
        .env("IMMUNE_INSTANCE", instance)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the immune-executor binary")
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn logs(container: &str) -> String {
    let out = tokio::process::Command::new("docker")
        .args(["logs", container])
        .output()
        .await
        .expect("docker logs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_mid_restart_the_restart_happens_once() {
    let world = World::new().await;
    let _cleanup = Cleanup::project(&world.project);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("executor.toml");
    std::fs::write(
        &config,
        format!(
            "project = \"{}\"\nlock_ttl_ms = 2000\nack_wait_ms = 2000\n[nats]\nurl = \"{}\"\n",
            world.project,
            world.nats.url()
        ),
    )
    .expect("write config");
    // The service drains for 3 s after SIGTERM: the restart takes that long.
    let mut spec = DemoSpec::new("orders", &world.project);
    spec.env.push("DRAIN_MS=3000".into());
    let demo = DemoContainer::start(spec).await;

    let first = Killed(spawn_executor(
        &config,
        "executor-first",
        &dir.path().join("first.log"),
    ));
    let since = common::fresh_since().await;
    let r = request(&demo, ActionKind::Restart, &[("stop_grace_s", "10")]);
    let mut results = world.results(&r.service).await;
    let mut audit = world
        .bus
        .client()
        .subscribe("immune.audit.executor.>")
        .await
        .expect("subscribe to audit");
    world.publish(&r).await;
    within(
        Duration::from_secs(30),
        "the first executor to start the restart (the demo logs 'draining')",
        async {
            while !logs(&demo.id).await.contains("draining") {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        },
    )
    .await;
    drop(first); // SIGKILL, mid-restart
    let results_bucket = world
        .bus
        .jetstream()
        .get_key_value(immune_nats::streams::EXECUTOR_RESULTS.name)
        .await
        .expect("results bucket");
    let key = immune_executor::ledger::result_key(&r.action_id);
    assert!(
        results_bucket
            .get(&key)
            .await
            .expect("read bucket")
            .is_none(),
        "the first executor must have died before storing a result"
    );
    assert!(
        results_bucket
            .get(immune_executor::ledger::attempt_key(&r.action_id))
            .await
            .expect("read bucket")
            .is_some(),
        "the first executor recorded its attempt"
    );

    let _second = Killed(spawn_executor(
        &config,
        "executor-second",
        &dir.path().join("second.log"),
    ));
    let result = next_result(&mut results, &r.action_id, Duration::from_secs(40)).await;
    assert_eq!(
        result.outcome,
        ActionOutcome::Succeeded,
        "{:?}",
        result.error
    );
    let note = within(
        Duration::from_secs(10),
        "the executor's audit record",
        async {
            use futures::StreamExt;
            loop {
                let m = audit.next().await.expect("audit subscription");
                if let Ok(env) = immune_nats::decode(&m.payload) {
                    if let immune_nats::Event::Audit(a) = env.body {
                        if a.what == "action.succeeded" {
                            return a.outcome;
                        }
                    }
                }
            }
        },
    )
    .await;
    assert!(
        note.contains("earlier attempt"),
        "finished the first attempt's restart: {note}"
    );
    assert!(demo.running().await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        starts_between(&demo.docker, &demo.id, since, unix_now() + 1).await,
        1,
        "exactly one restart"
    );
    assert_eq!(
        stored_results(&world.bus, &r.service, &r.action_id).await,
        1,
        "one result published"
    );
}

//! A stage's `run` started in-process on a task of the test: it gets a shutdown the test
//! holds the trigger of, may be waited on until it is ready, and is stopped on
//! [`RunningStage::stop`] (checked to return cleanly and in time) or on drop.
//!
//! ```ignore
//! let executor = RunningStage::start("the executor", Telemetry::new(Stage::Executor),
//!     |telemetry, shutdown| immune_executor::run(config, telemetry, shutdown));
//! // ... assertions on executor.telemetry ...
//! executor.stop().await;
//! ```

use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use immune_runtime::shutdown::ShutdownTrigger;
use immune_runtime::Shutdown;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::within;

/// How long [`RunningStage::stop`] waits unless told otherwise ([`RunningStage::stop_within`]).
pub const STOP_LIMIT: Duration = Duration::from_secs(30);

/// One stage running as a task of the test. `T` is what the test reads of it while it runs
/// (its telemetry); dropping it triggers the shutdown, so a failing test stops its stages.
#[derive(Debug)]
pub struct RunningStage<T> {
    name: String,
    /// What the stage counts, shared with the running task.
    pub telemetry: T,
    addr: Option<SocketAddr>,
    stop_limit: Duration,
    stop_hint: String,
    trigger: Option<ShutdownTrigger>,
    task: Option<JoinHandle<Result<(), String>>>,
}

impl<T: Clone> RunningStage<T> {
    /// Spawns `run(telemetry, shutdown)`, e.g. `|t, s| immune_executor::run(config, t, s)`.
    /// `name` says what it is in failure messages ("the executor").
    pub fn start<F, E>(name: &str, telemetry: T, run: impl FnOnce(T, Shutdown) -> F) -> Self
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Display,
    {
        let (trigger, shutdown) = Shutdown::new();
        let running = run(telemetry.clone(), shutdown);
        let task = tokio::spawn(async move { running.await.map_err(|e| e.to_string()) });
        RunningStage {
            name: name.to_string(),
            telemetry,
            addr: None,
            stop_limit: STOP_LIMIT,
            stop_hint: String::new(),
            trigger: Some(trigger),
            task: Some(task),
        }
    }

    /// Like [`RunningStage::start`] for a stage that serves HTTP: binds a free loopback port
    /// first and hands `run` the listener (its address is [`RunningStage::addr`]).
    pub async fn start_listening<F, E>(
        name: &str,
        telemetry: T,
        run: impl FnOnce(T, TcpListener, Shutdown) -> F,
    ) -> Self
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Display,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("a free loopback port for {name}: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("the address {name} is bound to: {e}"));
        let mut stage = Self::start(name, telemetry, |t, s| run(t, listener, s));
        stage.addr = Some(addr);
        stage
    }
}

impl<T> RunningStage<T> {
    /// [`RunningStage::stop`] waits `limit`; `hint` (what probably holds it open) goes into
    /// the timeout's message.
    pub fn stop_within(mut self, limit: Duration, hint: &str) -> Self {
        self.stop_limit = limit;
        self.stop_hint = hint.to_string();
        self
    }

    /// Waits, up to `limit`, for `probe` to resolve: the stage is ready (connected, its
    /// consumer bound, its port answering). `what` names the wait in the timeout's message.
    pub async fn ready_when<R>(
        self,
        limit: Duration,
        what: &str,
        probe: impl Future<Output = R>,
    ) -> Self {
        within(limit, what, probe).await;
        self
    }

    /// Waits, up to `limit`, until `GET path` on [`RunningStage::addr`] answers 2xx.
    pub async fn ready_on_http(self, path: &str, limit: Duration, what: &str) -> Self {
        let url = self.url(path);
        self.ready_when(limit, what, async {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("http client");
            loop {
                if let Ok(r) = client.get(&url).send().await {
                    if r.status().is_success() {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
    }

    /// The loopback address of a stage started with [`RunningStage::start_listening`].
    pub fn addr(&self) -> SocketAddr {
        self.addr
            .unwrap_or_else(|| panic!("{} was not started listening", self.name))
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// Asks the stage to stop without waiting for it (to stop several at once).
    pub fn trigger_shutdown(&self) {
        if let Some(trigger) = &self.trigger {
            trigger.trigger();
        }
    }

    /// Asks the stage to stop and checks that it returns cleanly within the stop limit.
    pub async fn stop(mut self) {
        self.trigger_shutdown();
        let Some(task) = self.task.take() else {
            return;
        };
        let hint = if self.stop_hint.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.stop_hint)
        };
        let what = format!("{} to stop after shutdown{hint}", self.name);
        match within(self.stop_limit, &what, task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{} ended with an error: {e}", self.name),
            Err(e) => panic!("{} panicked: {e}", self.name),
        }
    }

    /// Dies like a killed process: the task is aborted, no shutdown, no clean-up.
    pub fn crash(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        // Not triggered: a killed process is not asked to stop.
        if let Some(trigger) = self.trigger.take() {
            std::mem::forget(trigger);
        }
    }
}

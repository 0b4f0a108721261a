//! The console in a real browser: headless Chromium (Debian's `chromium`, installed by
//! `scripts/setup.sh`) opens the page served by the console, which watches a real
//! nats-server with the five stages running in-process and a real demo container. The test
//! clicks the demo service's crash button on the page and then reads the page's DOM (over the
//! DevTools protocol, `Runtime.evaluate`) until the incident shows up open and then
//! recovered. The page only learns that over `/events`, so the test fails if it does not
//! update. A screenshot is written to `target/console.png`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use futures::{SinkExt, StreamExt};
use immune_testkit::{unique, within, DemoContainer, DemoSpec, NatsServer};
use immune_tests::{Pipeline, PipelineConfig};
use serde_json::{json, Value};
use support::{http, start_console};
use tokio_websockets::Message;

/// Chromium on PATH, as `scripts/setup.sh` installs it.
fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
        {
            let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && !path.is_empty() {
                return PathBuf::from(path);
            }
        }
    }
    panic!("chromium not found on PATH: run scripts/setup.sh (it installs Debian's chromium)");
}

/// A headless Chromium, killed on drop.
struct Browser {
    child: Child,
    profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    fn launch(url: &str) -> Browser {
        let profile = tempfile::tempdir().expect("a Chromium profile directory");
        let log = std::fs::File::create(profile.path().join("chromium.log")).expect("log file");
        let child = Command::new(chromium())
            .args([
                "--headless",
                // The tests run as root in a container, where Chromium's sandbox cannot start.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
                "--window-size=1440,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start chromium");
        Browser { child, profile }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.profile.path().join("chromium.log")).unwrap_or_default()
    }

    /// The DevTools WebSocket of the page showing `url`.
    async fn page_socket(&self, url: &str) -> String {
        let port_file = self.profile.path().join("DevToolsActivePort");
        let port = within(
            Duration::from_secs(30),
            "Chromium to write DevToolsActivePort (did it start? see its log)",
            async {
                loop {
                    if let Ok(text) = std::fs::read_to_string(&port_file) {
                        if let Some(port) = text.lines().next().and_then(|l| l.parse::<u16>().ok())
                        {
                            return port;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        )
        .await;
        within(
            Duration::from_secs(30),
            "the page target in Chromium's /json/list",
            async {
                loop {
                    if let Ok(r) = http()
                        .get(format!("http://127.0.0.1:{port}/json/list"))
                        .send()
                        .await
                    {
                        if let Ok(targets) = r.json::<Vec<Value>>().await {
                            if let Some(ws) = targets.iter().find_map(|t| {
                                (t["type"] == "page"
                                    && t["url"].as_str().is_some_and(|u| u.starts_with(url)))
                                .then(|| t["webSocketDebuggerUrl"].as_str().map(str::to_string))
                                .flatten()
                            }) {
                                return ws;
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
        )
        .await
    }
}

/// A minimal DevTools-protocol client: one call at a time, events ignored.
struct Cdp {
    socket:
        tokio_websockets::WebSocketStream<tokio_websockets::MaybeTlsStream<tokio::net::TcpStream>>,
    next_id: u64,
}

impl Cdp {
    async fn connect(ws_url: &str) -> Cdp {
        let (socket, _) = tokio_websockets::ClientBuilder::new()
            .uri(ws_url)
            .expect("a DevTools WebSocket URL")
            .connect()
            .await
            .expect("connect to the page's DevTools socket");
        Cdp { socket, next_id: 1 }
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({"id": id, "method": method, "params": params}).to_string();
        self.socket
            .send(Message::text(request))
            .await
            .expect("send a DevTools command");
        let answer = within(
            Duration::from_secs(30),
            &format!("Chromium's answer to {method}"),
            async {
                loop {
                    let message = self
                        .socket
                        .next()
                        .await
                        .expect("DevTools socket open")
                        .expect("DevTools socket reads");
                    if let Some(text) = message.as_text() {
                        let value: Value = serde_json::from_str(text).expect("DevTools JSON");
                        if value["id"] == id {
                            return value;
                        }
                    }
                }
            },
        )
        .await;
        if let Some(error) = answer.get("error") {
            panic!("{method} failed: {error}");
        }
        answer["result"].clone()
    }

    /// Evaluates `expression` in the page and returns its value.
    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("page threw evaluating {expression}: {exception}");
        }
        result["result"]["value"].clone()
    }

    async fn screenshot(&mut self, path: &Path) {
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("base64 PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("target directory");
        }
        std::fs::write(path, png).expect("write the screenshot");
    }
}

/// What the page shows about the incident of one run, read from its DOM.
const INCIDENT_OF_RUN: &str = r#"(() => {
  const run = document.getElementById('chaos-status').dataset.runId || '';
  if (!run) return {run: ''};
  const li = [...document.querySelectorAll('#incidents li.incident')].find(e => e.dataset.key === run);
  if (!li) return {run, status: ''};
  return {run, status: li.dataset.status, service: li.dataset.service,
          steps: [...li.querySelectorAll('li.step')].map(s => s.dataset.step + ': ' + s.querySelector('.x').textContent)};
})()"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_injected_from_the_page_shows_as_an_incident_that_recovers() {
    let nats = NatsServer::start().await;
    let project = unique("console");
    let demo = DemoContainer::start(DemoSpec::new("orders", &project)).await;
    let pipeline = Pipeline::start(PipelineConfig::new(&nats.url(), &project));
    let console = start_console(&nats.url()).await;
    let page_url = console.url("/");

    let browser = Browser::launch(&page_url);
    let socket = browser.page_socket(&page_url).await;
    let mut page = Cdp::connect(&socket).await;

    // The page is live and shows the demo service healthy, with its chaos buttons.
    let ready = r#"(() => {
      // Null-safe: the page may still be loading.
      const conn = document.getElementById('conn');
      const card = document.querySelector('.card[data-service="orders"]');
      return !!conn && conn.textContent === 'live' && !!card
        && card.dataset.status === 'healthy'
        && !!card.querySelector('button[data-fault="crash"]')
        && card.querySelectorAll('svg.spark polyline').length > 0;
    })()"#;
    let shown = tokio::time::timeout(Duration::from_secs(90), async {
        while page.eval(ready).await != Value::Bool(true) {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    if shown.is_err() {
        let state = http()
            .get(console.url("/api/state"))
            .send()
            .await
            .map(|r| r.status().to_string())
            .unwrap_or_default();
        panic!(
            "the page never showed orders healthy with sparklines and a crash button within 90 s \
             (console /api/state: {state}; chromium log: {})",
            browser.log()
        );
    }
    let started_before = demo.started_at().await;

    // Click the crash button as a user would (the page posts /api/chaos).
    let clicked = std::time::Instant::now();
    page.eval(
        r#"document.querySelector('.card[data-service="orders"] button[data-fault="crash"]').click(); true"#,
    )
    .await;

    // The page shows the incident of that run, first open (its timeline says it opened),
    // then recovered.
    let mut seen_statuses: Vec<String> = Vec::new();
    let mut first_shown: Option<Duration> = None;
    let mut last = Value::Null;
    let recovered = tokio::time::timeout(Duration::from_secs(90), async {
        loop {
            last = page.eval(INCIDENT_OF_RUN).await;
            if let Some(status) = last["status"].as_str().filter(|s| !s.is_empty()) {
                first_shown.get_or_insert_with(|| clicked.elapsed());
                if seen_statuses.last().map(String::as_str) != Some(status) {
                    seen_statuses.push(status.to_string());
                }
                if status == "recovered" {
                    return;
                }
                assert!(
                    !matches!(status, "escalated" | "rejected"),
                    "the incident ended {status}: {last}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let recovered_shown = clicked.elapsed();
    assert!(
        recovered.is_ok(),
        "the page did not show the crash's incident recovered within 90 s; statuses seen \
         {seen_statuses:?}; last DOM read {last}"
    );
    assert_eq!(
        console.telemetry.count("chaos_requested", "crash"),
        1,
        "the click reached the console's chaos endpoint once"
    );
    let steps: Vec<String> = last["steps"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(last["service"], "orders");
    for expected in [
        "fault: fault crash injected",
        "anomaly: anomaly ",
        "incident: incident opened",
        "action: action restart",
        "result: restart succeeded",
        "incident: incident recovered",
    ] {
        assert!(
            steps.iter().any(|s| s.starts_with(expected)),
            "the page's timeline lacks {expected:?}: {steps:#?}"
        );
    }
    assert_ne!(
        demo.started_at().await,
        started_before,
        "the container really was restarted"
    );

    // The service card goes back to healthy, and the audit feed shows the recovery.
    within(
        Duration::from_secs(30),
        "the page to show orders healthy again with incident.recovered in the audit feed",
        async {
            let check = r#"(() => document.querySelector('.card[data-service="orders"]').dataset.status === 'healthy'
              && !!document.querySelector('#audit li[data-what="incident.recovered"]'))()"#;
            while page.eval(check).await != Value::Bool(true) {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        },
    )
    .await;

    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console.png");
    page.screenshot(&shot).await;
    // Figures (one run, read by polling the DOM every 100 ms; not asserted).
    println!(
        "page timeline: {steps:#?}\nstatuses seen: {seen_statuses:?}\n\
         click -> run's story on the page: {} ms\nclick -> page shows it recovered: {} ms\n\
         screenshot: {}",
        first_shown.unwrap_or_default().as_millis(),
        recovered_shown.as_millis(),
        shot.display()
    );

    drop(page);
    drop(browser);
    console.stop().await;
    pipeline.stop().await;
}

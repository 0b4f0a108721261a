//! A stage binary (`immune-<stage>`) as a real child process: configured through the
//! environment, SIGKILLed and started again at will, killed on drop. Its output (the
//! tracing log) of every run is kept in a temporary directory for failure messages.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

/// The stage binaries the workspace builds.
pub const STAGE_BINARIES: [&str; 5] = [
    "immune-collector",
    "immune-detector",
    "immune-decider",
    "immune-executor",
    "immune-chaos",
];

/// Where cargo puts the binaries of the profile this test was built with: the test runs
/// from `target/<profile>/deps/`, the binaries sit in `target/<profile>/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let deps = exe.parent().expect("the test executable's directory");
    match deps.file_name().and_then(|n| n.to_str()) {
        Some("deps") => deps.parent().expect("target/<profile>").to_path_buf(),
        _ => deps.to_path_buf(),
    }
}

/// The path of `immune-<stage>`. `cargo test --workspace --tests` (scripts/test.sh) leaves
/// the stage binaries there, since every stage crate has integration tests; when one is
/// missing, all of them are built once with `cargo build` (outside a running `cargo test`,
/// whose lock on the target directory would make that wait: then build them first).
pub fn stage_binary(stage: &str) -> PathBuf {
    let name = format!("immune-{stage}");
    assert!(
        STAGE_BINARIES.contains(&name.as_str()),
        "{name} is not a stage binary"
    );
    let path = profile_dir().join(&name);
    if !path.exists() {
        build_stage_binaries();
    }
    assert!(
        path.exists(),
        "{} missing after building: run `cargo build --bins`",
        path.display()
    );
    path
}

fn build_stage_binaries() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = Command::new(cargo);
        command.current_dir(env!("CARGO_MANIFEST_DIR")).arg("build");
        for bin in STAGE_BINARIES {
            command.args(["-p", bin]);
        }
        if profile_dir().file_name().and_then(|n| n.to_str()) == Some("release") {
            command.arg("--release");
        }
        let status = command
            .status()
            .expect("run cargo to build the stage binaries");
        assert!(status.success(), "cargo build of the stage binaries failed");
    });
}

/// One stage as a child process.
#[derive(Debug)]
pub struct StageProcess {
    pub stage: String,
    binary: PathBuf,
    env: BTreeMap<String, String>,
    logs: tempfile::TempDir,
    child: Option<Child>,
    runs: u32,
}

impl StageProcess {
    /// Starts `immune-<stage>` with `env` added to this process's environment (the stage
    /// reads `IMMUNE_NATS_URL` and `IMMUNE_<STAGE>__<KEY>`); `IMMUNE_INSTANCE` names the run.
    /// Its stdout and stderr (the log, without colours) go to a file per run.
    pub fn start(stage: &str, env: &[(String, String)]) -> StageProcess {
        let mut process = StageProcess {
            stage: stage.to_string(),
            binary: stage_binary(stage),
            env: env.iter().cloned().collect(),
            logs: tempfile::tempdir().expect("a directory for the stage's logs"),
            child: None,
            runs: 0,
        };
        process.start_again();
        process
    }

    /// Starts the stage again (after [`StageProcess::kill`]); a running one is killed first.
    pub fn start_again(&mut self) {
        self.kill();
        self.runs += 1;
        let log = std::fs::File::create(self.log_path(self.runs)).expect("the stage's log file");
        let child = Command::new(&self.binary)
            .envs(&self.env)
            .env("IMMUNE_INSTANCE", format!("{}-{}", self.stage, self.runs))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            // the human-readable log goes to stdout
            .stdout(log.try_clone().expect("the stage's log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.binary.display()));
        self.child = Some(child);
    }

    /// SIGKILL, no chance to finish anything, and reaps the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILL, then start again at once.
    pub fn restart(&mut self) {
        self.kill();
        self.start_again();
    }

    /// Whether the current run is still alive (`false` after it exited on its own).
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// How many times the stage was started.
    pub fn runs(&self) -> u32 {
        self.runs
    }

    fn log_path(&self, run: u32) -> PathBuf {
        self.logs.path().join(format!("{}-{run}.log", self.stage))
    }

    /// The stderr of every run so far, run by run (for failure messages).
    pub fn log(&self) -> String {
        (1..=self.runs)
            .map(|run| {
                let text = std::fs::read_to_string(self.log_path(run)).unwrap_or_default();
                format!("--- {} run {run} ---\n{text}", self.stage)
            })
            .collect()
    }

    /// The last `lines` lines of every run's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }
}

impl Drop for StageProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

//! A Unix-socket proxy in front of the Docker engine's socket that a test can cut and
//! restore, to make the engine briefly unreachable for one process (give that process
//! `DOCKER_HOST=`[`DockerProxy::docker_host`]) without touching the engine other tests use.
//!
//! Cut: the listener is closed and every open connection dropped, so new connections are
//! refused (the socket file stays, as a dead daemon's does). Restored: listening again on
//! the same path.

use std::path::PathBuf;

use tokio::net::{UnixListener, UnixStream};
use tokio::task::{JoinHandle, JoinSet};

/// The engine's socket: `DOCKER_HOST` when it is a `unix://` address, else the default.
fn engine_socket() -> PathBuf {
    match std::env::var("DOCKER_HOST") {
        Ok(host) if host.starts_with("unix://") => {
            PathBuf::from(host.trim_start_matches("unix://"))
        }
        _ => PathBuf::from("/var/run/docker.sock"),
    }
}

#[derive(Debug)]
pub struct DockerProxy {
    dir: tempfile::TempDir,
    upstream: PathBuf,
    serving: Option<JoinHandle<()>>,
}

impl DockerProxy {
    /// Listening, forwarding every connection to the engine's socket.
    pub async fn start() -> DockerProxy {
        let mut proxy = DockerProxy {
            dir: tempfile::tempdir().expect("a directory for the proxy socket"),
            upstream: engine_socket(),
            serving: None,
        };
        proxy.restore().await;
        proxy
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    /// The `DOCKER_HOST` value that goes through this proxy.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.path().display())
    }

    /// Whether connections are being forwarded.
    pub fn is_up(&self) -> bool {
        self.serving.is_some()
    }

    /// Closes the listener and drops every open connection: the engine is unreachable
    /// through the proxy until [`DockerProxy::restore`].
    pub fn cut(&mut self) {
        if let Some(serving) = self.serving.take() {
            // The connection tasks live in the serving task's JoinSet: aborted with it.
            serving.abort();
        }
    }

    /// Listens again on the same path.
    pub async fn restore(&mut self) {
        self.cut();
        let path = self.path();
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)
            .unwrap_or_else(|e| panic!("bind the proxy socket {}: {e}", path.display()));
        let upstream = self.upstream.clone();
        self.serving = Some(tokio::spawn(serve(listener, upstream)));
    }
}

async fn serve(listener: UnixListener, upstream: PathBuf) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            continue;
        };
        let upstream = upstream.clone();
        connections.spawn(async move {
            let Ok(mut engine) = UnixStream::connect(&upstream).await else {
                return; // dropping the client: it sees the connection closed
            };
            let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
        });
        while connections.try_join_next().is_some() {}
    }
}

impl Drop for DockerProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

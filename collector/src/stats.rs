//! CPU and memory of a container, read every interval without priming.
//!
//! First choice: the container's cgroup files (`cpuacct.usage`, `memory.usage_in_bytes` on
//! cgroup v1; `cpu.stat`, `memory.current` on v2; cgroupfs or systemd layout), a few
//! microseconds per read. In a container the host's `/sys/fs/cgroup` is mounted read-only and
//! named by `cgroup_root`. When no cgroup file can be found, Docker's stats API (`one-shot`)
//! is the fallback; some engines (20.10 here) still hold a repeated one-shot read for up to a
//! second, so the target task runs that read beside its interval instead of waiting for it.
//! CPU is computed here from the cumulative CPU time of two consecutive reads.

use std::path::{Path, PathBuf};

use bollard::query_parameters::StatsOptions;
use bollard::Docker;
use futures::StreamExt;

/// What one read says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub at_ms: u64,
    /// Cumulative CPU time of the container, nanoseconds.
    pub cpu_total_ns: u64,
    /// In use, page cache excluded (as `docker stats` reports it).
    pub memory_bytes: u64,
    /// The container's memory limit; `None` when it has none.
    pub memory_limit: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("docker stats: {0}")]
    Docker(#[from] bollard::errors::Error),
    #[error("docker stats: empty answer")]
    Empty,
    #[error("cgroup {path}: {why}")]
    Cgroup { path: String, why: String },
}

/// A limit this large means none (cgroup v1 writes the largest page-aligned i64).
const NO_LIMIT: u64 = 1 << 62;

/// Where a container's cgroup files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroup {
    V1 { cpu: PathBuf, memory: PathBuf },
    V2 { dir: PathBuf },
}

impl Cgroup {
    /// Finds the container's cgroup under `root` (normally `/sys/fs/cgroup`), for the
    /// cgroupfs (`docker/<id>`) and systemd (`system.slice/docker-<id>.scope`) drivers.
    pub fn find(root: &Path, container_id: &str) -> Option<Cgroup> {
        let scope = format!("docker-{container_id}.scope");
        let v1 = ["cpuacct", "cpu,cpuacct"].iter().find_map(|controller| {
            [
                root.join(controller).join("docker").join(container_id),
                root.join(controller).join("system.slice").join(&scope),
            ]
            .into_iter()
            .find(|d| d.join("cpuacct.usage").is_file())
        });
        if let Some(cpu) = v1 {
            let memory = [
                root.join("memory").join("docker").join(container_id),
                root.join("memory").join("system.slice").join(&scope),
            ]
            .into_iter()
            .find(|d| d.join("memory.usage_in_bytes").is_file())?;
            return Some(Cgroup::V1 { cpu, memory });
        }
        [
            root.join("system.slice").join(&scope),
            root.join("docker").join(container_id),
        ]
        .into_iter()
        .find(|d| d.join("memory.current").is_file() && d.join("cpu.stat").is_file())
        .map(|dir| Cgroup::V2 { dir })
    }

    /// Reads the counters now.
    pub fn read(&self, at_ms: u64) -> Result<Usage, StatsError> {
        match self {
            Cgroup::V1 { cpu, memory } => {
                let cpu_total_ns = read_number(&cpu.join("cpuacct.usage"))?;
                let usage = read_number(&memory.join("memory.usage_in_bytes"))?;
                let limit = read_number(&memory.join("memory.limit_in_bytes"))?;
                let cache = stat_field(&memory.join("memory.stat"), "total_inactive_file")?;
                Ok(Usage {
                    at_ms,
                    cpu_total_ns,
                    memory_bytes: usage.saturating_sub(cache),
                    memory_limit: (limit < NO_LIMIT).then_some(limit),
                })
            }
            Cgroup::V2 { dir } => {
                let cpu_total_ns = stat_field(&dir.join("cpu.stat"), "usage_usec")? * 1000;
                let usage = read_number(&dir.join("memory.current"))?;
                let cache = stat_field(&dir.join("memory.stat"), "inactive_file")?;
                let max = read_text(&dir.join("memory.max"))?;
                Ok(Usage {
                    at_ms,
                    cpu_total_ns,
                    memory_bytes: usage.saturating_sub(cache),
                    memory_limit: max.trim().parse().ok(),
                })
            }
        }
    }
}

fn read_text(path: &Path) -> Result<String, StatsError> {
    std::fs::read_to_string(path).map_err(|e| StatsError::Cgroup {
        path: path.display().to_string(),
        why: e.to_string(),
    })
}

fn read_number(path: &Path) -> Result<u64, StatsError> {
    let text = read_text(path)?;
    text.trim().parse().map_err(|_| StatsError::Cgroup {
        path: path.display().to_string(),
        why: format!("not a number: {:?}", text.trim()),
    })
}

/// One `key value` line of a flat-keyed cgroup file; 0 when the key is absent.
fn stat_field(path: &Path, key: &str) -> Result<u64, StatsError> {
    let text = read_text(path)?;
    Ok(text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok()).flatten()
        })
        .unwrap_or(0))
}

/// Reads the container's counters once through Docker's stats API.
pub async fn read_docker(docker: &Docker, id: &str, at_ms: u64) -> Result<Usage, StatsError> {
    let options = StatsOptions {
        stream: false,
        one_shot: true,
    };
    let stats = docker
        .stats(id, Some(options))
        .next()
        .await
        .ok_or(StatsError::Empty)??;
    let cpu_total_ns = stats
        .cpu_stats
        .and_then(|c| c.cpu_usage)
        .and_then(|u| u.total_usage)
        .unwrap_or(0);
    let memory = stats.memory_stats.unwrap_or_default();
    let usage = memory.usage.unwrap_or(0);
    // cgroup v2 reports inactive_file, v1 total_inactive_file; docker stats subtracts it.
    let cache = memory
        .stats
        .as_ref()
        .and_then(|s| {
            s.get("inactive_file")
                .or_else(|| s.get("total_inactive_file"))
        })
        .copied()
        .unwrap_or(0);
    Ok(Usage {
        at_ms,
        cpu_total_ns,
        memory_bytes: usage.saturating_sub(cache),
        memory_limit: memory.limit.filter(|&l| l > 0 && l < NO_LIMIT),
    })
}

/// Cores busy between two reads; `None` when time did not advance or the counter went back
/// (the container restarted and its cgroup is new).
pub fn cpu_cores(previous: &Usage, current: &Usage) -> Option<f64> {
    let elapsed_ns = current.at_ms.checked_sub(previous.at_ms)? as f64 * 1e6;
    if elapsed_ns <= 0.0 {
        return None;
    }
    let used = current.cpu_total_ns.checked_sub(previous.cpu_total_ns)? as f64;
    Some(used / elapsed_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(at_ms: u64, cpu_total_ns: u64) -> Usage {
        Usage {
            at_ms,
            cpu_total_ns,
            memory_bytes: 0,
            memory_limit: None,
        }
    }

    #[test]
    fn cores_from_two_reads() {
        let half_a_core = cpu_cores(&usage(1000, 0), &usage(2000, 500_000_000));
        assert_eq!(half_a_core, Some(0.5));
    }

    #[test]
    fn a_restarted_container_gives_no_figure_rather_than_a_wrong_one() {
        assert_eq!(
            cpu_cores(&usage(1000, 9_000_000_000), &usage(2000, 1_000)),
            None
        );
        assert_eq!(cpu_cores(&usage(1000, 0), &usage(1000, 5)), None);
    }

    fn write(dir: &Path, file: &str, text: &str) {
        std::fs::create_dir_all(dir).expect("mkdir");
        std::fs::write(dir.join(file), text).expect("write");
    }

    #[test]
    fn reads_cgroup_v1_and_v2_layouts() {
        let root = tempfile::tempdir().expect("tmp");
        let v1 = root.path().join("v1");
        write(
            &v1.join("cpuacct/docker/abc"),
            "cpuacct.usage",
            "5000000000\n",
        );
        let mem = v1.join("memory/docker/abc");
        write(&mem, "memory.usage_in_bytes", "3000\n");
        write(&mem, "memory.limit_in_bytes", "9223372036854771712\n");
        write(&mem, "memory.stat", "cache 10\ntotal_inactive_file 1000\n");
        let u = Cgroup::find(&v1, "abc")
            .expect("v1 found")
            .read(7)
            .expect("v1 read");
        assert_eq!(
            (u.cpu_total_ns, u.memory_bytes, u.memory_limit),
            (5_000_000_000, 2000, None)
        );

        let v2 = root.path().join("v2");
        let dir = v2.join("system.slice/docker-abc.scope");
        write(&dir, "cpu.stat", "usage_usec 2500\nuser_usec 2000\n");
        write(&dir, "memory.current", "4096\n");
        write(&dir, "memory.stat", "anon 1\ninactive_file 96\n");
        write(&dir, "memory.max", "8192\n");
        let u = Cgroup::find(&v2, "abc")
            .expect("v2 found")
            .read(7)
            .expect("v2 read");
        assert_eq!(
            (u.cpu_total_ns, u.memory_bytes, u.memory_limit),
            (2_500_000, 4000, Some(8192))
        );

        assert_eq!(Cgroup::find(&v2, "other"), None);
    }
}

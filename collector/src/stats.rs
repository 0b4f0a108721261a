//! CPU and memory of a container from Docker's stats API, one shot per interval.
//!
//! `one-shot` answers at once with the current counters instead of priming for a second,
//! so CPU is computed here from the cumulative CPU time of two consecutive reads.

use bollard::query_parameters::StatsOptions;
use bollard::Docker;
use futures::StreamExt;

/// What one read of the stats API says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub at_ms: u64,
    /// Cumulative CPU time of the container, nanoseconds.
    pub cpu_total_ns: u64,
    /// In use, page cache excluded (as `docker stats` reports it).
    pub memory_bytes: u64,
    /// The container's memory limit (the host's memory when it has none).
    pub memory_limit: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("docker stats: {0}")]
    Docker(#[from] bollard::errors::Error),
    #[error("docker stats: empty answer")]
    Empty,
}

/// Reads the container's counters once.
pub async fn read(docker: &Docker, id: &str, at_ms: u64) -> Result<Usage, StatsError> {
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
        memory_limit: memory.limit.filter(|&l| l > 0),
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
}

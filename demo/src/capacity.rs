//! A service's finite capacity: `slots` requests are worked on at once, each for `work` of
//! service time (a sleep: the demo stands for I/O-bound work, not CPU), up to `queue` more
//! wait their turn, and any request beyond those is refused at once. So one service serves
//! about `slots / work` requests a second; beyond that its latency rises (the queue wait is
//! part of it), then it sheds load.
//!
//! The counts stay honest when a waiting request is dropped (its client went away): every
//! admission is a guard that gives its place back on drop.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;

/// How many requests a service works on at once, how long each takes, how many may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub slots: usize,
    pub work: Duration,
    pub queue: usize,
}

impl Limits {
    /// Requests a second the slots sustain (`slots / work`); unbounded when `work` is 0.
    pub fn throughput(&self) -> f64 {
        if self.work.is_zero() {
            f64::INFINITY
        } else {
            self.slots as f64 / self.work.as_secs_f64()
        }
    }
}

/// The slots and the queue in front of them, shared by every request.
#[derive(Debug)]
pub struct Capacity {
    limits: Limits,
    slots: Semaphore,
    /// Requests admitted and not yet done: in a slot or waiting for one.
    admitted: AtomicUsize,
    /// Requests admitted and waiting for a slot.
    waiting: AtomicUsize,
}

/// Why a request was refused: slots and queue are all taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded;

impl Capacity {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            slots: Semaphore::new(limits.slots),
            admitted: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Requests waiting for a slot now.
    pub fn queue_depth(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Takes a place (a slot or a place in the queue), or refuses at once when none is left.
    pub fn admit(&self) -> Result<Admitted<'_>, Overloaded> {
        let most = self.limits.slots + self.limits.queue;
        self.admitted
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < most).then_some(n + 1)
            })
            .map(|_| Admitted { capacity: self })
            .map_err(|_| Overloaded)
    }
}

/// A request's place in the service, given back on drop.
#[derive(Debug)]
pub struct Admitted<'a> {
    capacity: &'a Capacity,
}

impl Admitted<'_> {
    /// Waits for a slot, then holds it for the service time.
    pub async fn work(self) {
        let capacity = self.capacity;
        let waiting = Waiting::start(&capacity.waiting);
        let slot = capacity.slots.acquire().await;
        drop(waiting);
        if !capacity.limits.work.is_zero() {
            tokio::time::sleep(capacity.limits.work).await;
        }
        drop(slot);
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.capacity.admitted.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts a request in the queue while it waits, also when the wait is dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn start(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::time::Instant;

    fn limits(slots: usize, work_ms: u64, queue: usize) -> Limits {
        Limits {
            slots,
            work: Duration::from_millis(work_ms),
            queue,
        }
    }

    #[test]
    fn throughput_is_slots_over_work() {
        assert_eq!(limits(8, 20, 32).throughput(), 400.0);
        assert_eq!(limits(4, 25, 0).throughput(), 160.0);
        assert!(limits(1, 0, 0).throughput().is_infinite());
    }

    #[tokio::test(start_paused = true)]
    async fn beyond_slots_and_queue_is_refused_at_once() {
        let capacity = Arc::new(Capacity::new(limits(2, 20, 3)));
        let mut held = Vec::new();
        for _ in 0..5 {
            held.push(capacity.admit().expect("a place among 2 slots + 3 queued"));
        }
        assert_eq!(capacity.admit().map(|_| ()), Err(Overloaded));
        drop(held.pop());
        assert!(capacity.admit().is_ok(), "a place given back is free again");
    }

    #[tokio::test(start_paused = true)]
    async fn queued_requests_wait_their_turn() {
        let capacity = Arc::new(Capacity::new(limits(2, 20, 4)));
        let started = Instant::now();
        let mut done = tokio::task::JoinSet::new();
        for _ in 0..6 {
            let capacity = capacity.clone();
            done.spawn(async move {
                capacity.admit().expect("within slots + queue").work().await;
                started.elapsed()
            });
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(capacity.queue_depth(), 4, "2 in slots, 4 waiting");
        let mut finished: Vec<Duration> = done.join_all().await;
        finished.sort();
        let ms: Vec<u128> = finished.iter().map(|d| d.as_millis()).collect();
        // Two at a time, 20 ms each: the wait is part of the latency.
        assert_eq!(ms, vec![20, 20, 40, 40, 60, 60]);
        assert_eq!(capacity.queue_depth(), 0);
        assert!(capacity.admit().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_wait_gives_its_place_back() {
        let capacity = Arc::new(Capacity::new(limits(1, 1000, 1)));
        let spawn_request = || {
            let capacity = capacity.clone();
            tokio::spawn(async move { capacity.admit().expect("a place").work().await })
        };
        let working = spawn_request();
        tokio::time::sleep(Duration::from_millis(1)).await;
        let waiting = spawn_request();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(capacity.queue_depth(), 1);
        assert_eq!(capacity.admit().map(|_| ()), Err(Overloaded));
        waiting.abort();
        assert!(waiting.await.is_err(), "aborted while waiting");
        assert_eq!(capacity.queue_depth(), 0, "the aborted wait left the queue");
        assert!(capacity.admit().is_ok(), "and gave its place back");
        working.abort();
    }
}

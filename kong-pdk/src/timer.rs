//! Work a handler leaves for later (Kong's `kong.timer:at` / `ngx.timer.at`): a future the
//! gateway runs after a delay, outside any request, through
//! [`Kong::timer_at`](crate::Kong::timer_at). Keep what such a task holds bounded: the gateway
//! runs every task it is given.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A task for later.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The gateway's timers.
pub trait Timers: Send + Sync + 'static {
    /// Runs `task` once `delay` has passed; `false` when the gateway is shutting down and
    /// will not run it.
    fn at(&self, delay: Duration, task: Task) -> bool;

    /// A future that is ready once `delay` has passed, for a task's waits between steps.
    fn sleep(&self, delay: Duration) -> Task;

    /// Tasks waiting for their delay and tasks running now (nginx's
    /// `ngx.timer.pending_count()` and `running_count()`); zeros when not counted.
    fn counts(&self) -> TimerCounts {
        TimerCounts::default()
    }
}

/// How many timer tasks wait and run ([`Timers::counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimerCounts {
    /// Tasks whose delay has passed and that have not finished.
    pub running: u64,
    /// Tasks whose delay has not passed.
    pub pending: u64,
}

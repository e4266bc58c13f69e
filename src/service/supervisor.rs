//! Named long-running tasks under watch. Every task runs until the shared shutdown token is
//! cancelled; the first one to end before that (an error it gave up on, a panic, an early
//! return) is logged with its reason, readiness turns off, the others are told to stop, and
//! the process reports the failure so an orchestrator restarts it. No failure is silent.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Why a task ended before it was asked to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("task `{task}` ended unexpectedly: {reason}")]
pub struct TaskEnded {
    pub task: &'static str,
    pub reason: String,
}

/// A task's own account of why it stopped, when it stops by itself.
pub type TaskResult = Result<(), String>;

pub struct Supervisor {
    tasks: JoinSet<(&'static str, TaskResult)>,
    names: Vec<(tokio::task::Id, &'static str)>,
    stop: CancellationToken,
    /// Read by `/readyz`: set when shutting down, for whatever reason.
    not_ready: Arc<AtomicBool>,
}

impl Supervisor {
    /// `stop` is the token every task watches; `not_ready` is readiness's flag.
    pub fn new(stop: CancellationToken, not_ready: Arc<AtomicBool>) -> Supervisor {
        Supervisor {
            tasks: JoinSet::new(),
            names: Vec::new(),
            stop,
            not_ready,
        }
    }

    /// Starts a named task. It should return only once `stop` is cancelled.
    pub fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = TaskResult> + Send + 'static,
    {
        let handle = self.tasks.spawn(async move { (name, task.await) });
        self.names.push((handle.id(), name));
    }

    fn name_of(&self, e: &JoinError) -> &'static str {
        self.names
            .iter()
            .find(|(id, _)| *id == e.id())
            .map_or("unknown", |(_, n)| n)
    }

    /// Waits until `requested` is cancelled (a signal) or a task ends on its own, whichever
    /// comes first; then turns readiness off and tells every task to stop. Returns the task
    /// that ended unexpectedly, if that was the cause.
    pub async fn watch(&mut self, requested: &CancellationToken) -> Option<TaskEnded> {
        let ended = tokio::select! {
            _ = requested.cancelled() => None,
            Some(joined) = self.tasks.join_next() => Some(match joined {
                Ok((task, Ok(()))) => TaskEnded { task, reason: "returned before shutdown".into() },
                Ok((task, Err(reason))) => TaskEnded { task, reason },
                Err(e) => TaskEnded { task: self.name_of(&e), reason: join_reason(e) },
            }),
        };
        self.not_ready.store(true, Ordering::Relaxed);
        match &ended {
            Some(e) => {
                error!(task = e.task, reason = %e.reason, "a task ended unexpectedly: readiness off, stopping")
            }
            None => info!("shutting down: no more pulls; finishing in-flight work"),
        }
        self.stop.cancel();
        ended
    }

    /// Waits for the remaining tasks, at most `within`, then aborts what is left. A task that
    /// fails while stopping is logged.
    pub async fn drain(mut self, within: Duration) {
        let all = async {
            while let Some(joined) = self.tasks.join_next().await {
                match joined {
                    Ok((_, Ok(()))) => {}
                    Ok((task, Err(reason))) => warn!(task, %reason, "task failed while stopping"),
                    Err(e) if e.is_cancelled() => {}
                    Err(e) => warn!(reason = %join_reason(e), "task failed while stopping"),
                }
            }
        };
        if tokio::time::timeout(within, all).await.is_err() {
            warn!(
                ?within,
                "tasks still running at the shutdown deadline: aborting them"
            );
            self.tasks.abort_all();
        }
    }
}

/// How long `/readyz` keeps answering 503 after a task failed and the rest has stopped.
const FAILURE_GRACE: Duration = Duration::from_millis(500);

/// The HTTP server of a supervised process, watched as task `http` (see
/// [`Supervisor::watch_http`]).
pub struct HttpServer {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Supervisor {
    /// Watches the HTTP server `server` (stopped by `server_stop`) as task `http`: it
    /// outlives the other tasks (it answers 503 while they drain), and a server that dies
    /// by itself is a task failure like any other.
    pub fn watch_http(
        &mut self,
        mut server: tokio::task::JoinHandle<()>,
        server_stop: CancellationToken,
    ) -> HttpServer {
        let (ended_tx, ended) = tokio::sync::oneshot::channel::<()>();
        let stop = self.stop.clone();
        self.spawn("http", async move {
            tokio::select! {
                _ = stop.cancelled() => Ok(()),
                _ = ended => Err("the HTTP server stopped".into()),
            }
        });
        let task = tokio::spawn(async move {
            let _ = (&mut server).await;
            let _ = ended_tx.send(());
        });
        HttpServer {
            stop: server_stop,
            task,
        }
    }
}

impl Supervisor {
    /// After [`Supervisor::watch`]: waits for the tasks (see [`Supervisor::drain`]), runs
    /// `cleanup` (flush, drain NATS, close pools), all within `timeout`, then closes the
    /// HTTP server watched by [`Supervisor::watch_http`], if any (a server that is a task
    /// of its own, as ingest's is, stops with the tasks); `ended` (the task that failed, if
    /// any) is the result.
    pub async fn shut_down(
        self,
        ended: Option<TaskEnded>,
        timeout: Duration,
        server: Option<HttpServer>,
        cleanup: impl Future<Output = ()>,
        what: &str,
    ) -> Result<(), TaskEnded> {
        let graceful = async {
            self.drain(timeout).await;
            cleanup.await;
        };
        if tokio::time::timeout(timeout, graceful).await.is_err() {
            warn!(
                ?timeout,
                "shutdown timed out; unacked messages will be redelivered"
            );
        }
        if let Some(server) = server {
            server.close(ended.is_some(), timeout).await;
        }
        match ended {
            None => {
                info!("{what} stopped");
                Ok(())
            }
            Some(e) => Err(e),
        }
    }
}

impl HttpServer {
    /// Stops the server once everything else has. After a failure it first lets probes
    /// see the 503 and a scrape take the last metrics (half a second, at most `timeout`),
    /// short next to an orchestrator's restart.
    pub async fn close(self, failed: bool, timeout: Duration) {
        if failed {
            tokio::time::sleep(FAILURE_GRACE.min(timeout)).await;
        }
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

fn join_reason(e: JoinError) -> String {
    if e.is_cancelled() {
        return "cancelled".into();
    }
    let panic = e.into_panic();
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into());
    format!("panicked: {msg}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_task_to_end_is_reported_and_the_others_are_stopped() {
        let stop = CancellationToken::new();
        let flag = Arc::new(AtomicBool::new(false));
        let mut s = Supervisor::new(stop.clone(), flag.clone());
        let t = stop.clone();
        s.spawn("patient", async move {
            t.cancelled().await;
            Ok(())
        });
        s.spawn("doomed", async { panic!("boom") });
        let ended = s.watch(&CancellationToken::new()).await;
        assert_eq!(
            ended,
            Some(TaskEnded {
                task: "doomed",
                reason: "panicked: boom".into()
            })
        );
        assert!(flag.load(Ordering::Relaxed), "readiness off");
        assert!(stop.is_cancelled());
        tokio::time::timeout(Duration::from_secs(1), s.drain(Duration::from_secs(1)))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_requested_stop_is_not_a_failure() {
        let stop = CancellationToken::new();
        let flag = Arc::new(AtomicBool::new(false));
        let mut s = Supervisor::new(stop.clone(), flag.clone());
        let t = stop.clone();
        s.spawn("patient", async move {
            t.cancelled().await;
            Ok(())
        });
        let requested = CancellationToken::new();
        requested.cancel();
        assert_eq!(s.watch(&requested).await, None);
        assert!(flag.load(Ordering::Relaxed));
        s.drain(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn an_early_return_is_a_failure_too() {
        let stop = CancellationToken::new();
        let mut s = Supervisor::new(stop, Arc::new(AtomicBool::new(false)));
        s.spawn("quitter", async { Err("gave up: database gone".into()) });
        let ended = s.watch(&CancellationToken::new()).await.unwrap();
        assert_eq!(ended.task, "quitter");
        assert_eq!(ended.reason, "gave up: database gone");
    }
}

//! What both daemons do the same way around their tasks: stop on SIGINT or SIGTERM, and end
//! the process with a failure status when any task panics or stops on its own, so a
//! supervisor (systemd `Restart=on-failure`) restarts it instead of leaving a process that
//! looks alive but serves nothing.

use std::{
    future::Future,
    pin::Pin,
    sync::atomic::{AtomicBool, Ordering},
    task::Poll,
};

use tokio::task::JoinHandle;

/// Logs to stdout (journald under systemd) at `RUST_LOG` or `info`; ANSI colours only on a
/// terminal and without `NO_COLOR`, so journald and log files get plain text.
pub fn init_logging(json: bool) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let colour = std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Runs a daemon's `serve` on a multi-threaded runtime; a user error is printed as
/// `error: ...` with its causes, without a backtrace, and gives the failure status.
pub fn run_main(serve: impl Future<Output = anyhow::Result<()>>) -> std::process::ExitCode {
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::Error::new(e).context("cannot start the async runtime"))
        .and_then(|runtime| runtime.block_on(serve));
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}", error_text(&error));
            std::process::ExitCode::FAILURE
        }
    }
}

/// `error: ...` and each distinct cause on its own `caused by:` line.
fn error_text(error: &anyhow::Error) -> String {
    let mut text = format!("error: {error}");
    let mut last = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !cause.is_empty() && !last.ends_with(&cause) {
            text.push_str("\n  caused by: ");
            text.push_str(&cause);
            last = cause;
        }
    }
    text
}

/// Exit status after a panic or an unexpected task exit (`EX_SOFTWARE` in sysexits.h).
pub const FAILURE_EXIT_CODE: i32 = 70;

static HEALTHY: AtomicBool = AtomicBool::new(true);

/// False once any thread of the process has panicked; readiness checks report it.
pub fn healthy() -> bool {
    HEALTHY.load(Ordering::Relaxed)
}

/// Installs a panic hook that marks the process unhealthy, prints the panic as usual, logs
/// it, and ends the process with [`FAILURE_EXIT_CODE`]. Only daemons' `main` calls this:
/// a panic anywhere, in any task or blocking thread, is a process failure.
pub fn exit_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        HEALTHY.store(false, Ordering::Relaxed);
        default(info);
        tracing::error!(panic = %info, "a task panicked: exiting so the supervisor restarts the process");
        std::process::exit(FAILURE_EXIT_CODE);
    }));
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                return;
            }
            Err(e) => tracing::warn!(error = %e, "cannot watch SIGTERM; stopping on Ctrl-C only"),
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Waits until the first of `tasks` ends, removes it, and says how it ended. Pending forever
/// when there are no tasks.
pub async fn first_exit(tasks: &mut Vec<JoinHandle<()>>) -> String {
    let (index, outcome) = std::future::poll_fn(|cx| {
        for (i, task) in tasks.iter_mut().enumerate() {
            if let Poll::Ready(outcome) = Pin::new(task).poll(cx) {
                return Poll::Ready((i, outcome));
            }
        }
        Poll::Pending
    })
    .await;
    tasks.remove(index);
    match outcome {
        Ok(()) => format!("task {index} stopped on its own"),
        Err(e) if e.is_panic() => format!("task {index} panicked"),
        Err(_) => format!("task {index} was cancelled"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_errors_read_as_a_cause_chain() {
        let e = anyhow::anyhow!("connection refused").context("cannot reach the broker");
        assert_eq!(
            error_text(&e),
            "error: cannot reach the broker\n  caused by: connection refused"
        );
    }

    #[tokio::test]
    async fn the_first_task_to_end_is_reported_and_removed() {
        let mut tasks = vec![
            tokio::spawn(std::future::pending::<()>()),
            tokio::spawn(async { panic!("boom") }),
        ];
        let why = first_exit(&mut tasks).await;
        assert_eq!(why, "task 1 panicked");
        assert_eq!(tasks.len(), 1);
        tasks[0].abort();
        let why = first_exit(&mut tasks).await;
        assert_eq!(why, "task 0 was cancelled");
    }

    /// Runs only as the child process of the test below.
    #[test]
    #[ignore = "run by a_panic_in_any_task_ends_the_process_with_a_failure_status"]
    fn child_panics_in_a_spawned_task() {
        if std::env::var_os("SLIM_DAEMON_PANIC_CHILD").is_none() {
            return;
        }
        exit_on_panic();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let _ = tokio::spawn(async { panic!("injected fault") }).await;
            // Not reached: the hook exits first.
            std::process::exit(0);
        });
    }

    #[test]
    fn a_panic_in_any_task_ends_the_process_with_a_failure_status() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "daemon::tests::child_panics_in_a_spawned_task",
                "--ignored",
                "--nocapture",
            ])
            .env("SLIM_DAEMON_PANIC_CHILD", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(FAILURE_EXIT_CODE), "{stderr}");
        assert!(stderr.contains("injected fault"), "{stderr}");
    }
}

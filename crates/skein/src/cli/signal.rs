//! Ctrl-C and SIGTERM for long-running commands: the first signal asks the command to stop
//! cleanly (a group member commits and leaves its group), a second one exits at once.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

/// True once SIGINT or SIGTERM has arrived.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Starts a thread that turns SIGINT and SIGTERM into [`stop_requested`].
pub fn install() {
    let spawned = std::thread::Builder::new()
        .name("signals".to_owned())
        .spawn(|| {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let (Ok(mut term), Ok(mut int)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) else {
                    return;
                };
                loop {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                    if STOP.swap(true, Ordering::Relaxed) {
                        std::process::exit(130);
                    }
                }
            });
        });
    if let Err(e) = spawned {
        eprintln!("skein: no signal handling: {e}");
    }
}

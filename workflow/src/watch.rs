//! Watching the workflow folder: a change to a file there is signalled (a
//! burst of file events becomes one signal) so that `kairo serve` loads it
//! as a new version, or reports it with path:line:column and keeps the
//! previous version running.

use std::path::Path;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// How long file events are gathered before one reload: an editor's save is
/// often several events (write, rename, chmod).
pub const SETTLE: Duration = Duration::from_millis(250);

/// A running watch; dropping it stops the watch.
#[derive(Debug)]
pub struct FolderWatch {
    _watcher: RecommendedWatcher,
    changes: mpsc::Receiver<()>,
}

impl FolderWatch {
    /// Watches `dir` (and the folders below it).
    pub fn start(dir: &Path) -> Result<FolderWatch, notify::Error> {
        let (tx, changes) = mpsc::channel(1);
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let relevant = event.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_)));
            if relevant {
                // A full channel already holds a pending change.
                let _ = tx.try_send(());
            }
        })?;
        watcher.watch(dir, RecursiveMode::Recursive)?;
        Ok(FolderWatch { _watcher: watcher, changes })
    }

    /// Waits for the next change, then for the folder to settle. `None`
    /// when the watch has ended.
    pub async fn changed(&mut self) -> Option<()> {
        self.changes.recv().await?;
        loop {
            match tokio::time::timeout(SETTLE, self.changes.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return None,
                Err(_) => return Some(()),
            }
        }
    }
}

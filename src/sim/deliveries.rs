//! When the simulator sent each workspace event (`delivery_log` in its configuration), so
//! the benchmark can split a phase's lateness into the simulator's part (state changed →
//! event on the socket) and ours (event on the socket → phase ended).
//!
//! One line per event sent on a watch stream: `<workspace id> <updated_at, RFC 3339>
//! <sent, µs since the Unix epoch>`. Lines gather in memory and reach the file every 100 ms
//! from a task of their own, so recording costs a send no file write.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::types::Workspace;

pub struct DeliveryLog {
    path: PathBuf,
    pending: Mutex<String>,
}

impl DeliveryLog {
    /// Starts an empty log at `path` (created or truncated).
    pub fn create(path: &Path) -> std::io::Result<DeliveryLog> {
        std::fs::File::create(path).map_err(|e| {
            std::io::Error::new(e.kind(), format!("delivery_log {}: {e}", path.display()))
        })?;
        Ok(DeliveryLog {
            path: path.to_path_buf(),
            pending: Mutex::new(String::new()),
        })
    }

    /// Notes that `ws`, as it is now, just went out on a stream.
    pub fn sent(&self, ws: &Workspace) {
        self.sent_state(ws.id, ws.updated_at)
    }

    fn sent_state(&self, id: uuid::Uuid, updated_at: chrono::DateTime<chrono::Utc>) {
        use std::fmt::Write as _;
        let at = chrono::Utc::now().timestamp_micros();
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(
            p,
            "{id} {} {at}",
            updated_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        );
    }

    fn flush(&self) -> std::io::Result<()> {
        let lines = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if lines.is_empty() {
            return Ok(());
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)?
            .write_all(lines.as_bytes())
    }

    /// Writes what gathered every 100 ms until `stop`, then once more.
    pub async fn keep_flushing(self: std::sync::Arc<Self>, stop: CancellationToken) {
        loop {
            let stopping = tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => false,
                _ = stop.cancelled() => true,
            };
            if let Err(e) = self.flush() {
                tracing::warn!(path = %self.path.display(), error = %e, "delivery log not written");
            }
            if stopping {
                return;
            }
        }
    }
}

/// A line of the log, read back: (workspace id, updated_at, sent).
pub fn parse_line(line: &str) -> Option<(uuid::Uuid, chrono::DateTime<chrono::Utc>, i64)> {
    let mut f = line.split(' ');
    let id = f.next()?.parse().ok()?;
    let updated = chrono::DateTime::parse_from_rfc3339(f.next()?)
        .ok()?
        .to_utc();
    let sent = f.next()?.parse().ok()?;
    Some((id, updated, sent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_reach_the_file_and_read_back() {
        let dir = std::env::temp_dir().join(format!("sim-deliveries-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let log = std::sync::Arc::new(DeliveryLog::create(&path).unwrap());
        let stop = CancellationToken::new();
        let task = tokio::spawn(log.clone().keep_flushing(stop.clone()));
        let (id, updated) = (uuid::Uuid::new_v4(), chrono::Utc::now());
        let before = chrono::Utc::now().timestamp_micros();
        log.sent_state(id, updated);
        log.sent_state(id, updated);
        stop.cancel();
        task.await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<_> = text.lines().map(|l| parse_line(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].0, id);
        assert_eq!(lines[0].1, updated);
        assert!(lines[0].2 >= before && lines[1].2 >= lines[0].2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

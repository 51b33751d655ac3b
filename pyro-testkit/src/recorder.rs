//! [`Recorder`]: a receiver that keeps every profile it is handed, for tests that check what a
//! pipeline delivered (a stand-in for Pyroscope behind a server, the collector's `forward_to`).

use std::sync::Mutex;
use std::time::Duration;

use pyro_core::{AppendError, Profile, Receiver};
use tokio::sync::Notify;

/// Keeps every profile it receives; [`wait_for`](Self::wait_for) waits for one that matches.
#[derive(Debug, Default)]
pub struct Recorder {
    profiles: Mutex<Vec<Profile>>,
    notify: Notify,
}

#[pyro_core::async_trait]
impl Receiver for Recorder {
    async fn append(&self, profile: Profile) -> Result<(), AppendError> {
        self.profiles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(profile);
        self.notify.notify_waiters();
        Ok(())
    }
}

impl Recorder {
    /// A copy of everything received so far.
    pub fn profiles(&self) -> Vec<Profile> {
        self.profiles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Everything received so far, forgetting it.
    pub fn take(&self) -> Vec<Profile> {
        std::mem::take(&mut *self.profiles.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The distinct label sets seen, sorted (for failure messages).
    pub fn labels_seen(&self) -> Vec<String> {
        let mut seen: Vec<String> = self
            .profiles()
            .iter()
            .map(|p| p.labels.to_string())
            .collect();
        seen.sort();
        seen.dedup();
        seen
    }

    /// The first profile satisfying `pred` within `timeout` (among those already received and
    /// those arriving meanwhile).
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&Profile) -> bool,
    ) -> Option<Profile> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            if let Some(p) = self.profiles().into_iter().find(|p| pred(p)) {
                return Some(p);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }
}

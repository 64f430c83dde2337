//! The outbox: follow-up commands committed with the unit of work that produced them, sent
//! after it.

use std::sync::atomic::Ordering;

use tracing::{error, warn};

use super::bus::OutgoingCommand;
use super::{Projector, WriteSide};
use crate::base::error::{Error, Location};
use crate::codec::command_record;

impl WriteSide {
    /// Sends every command waiting in the outbox (left by a crash, or by another process), in
    /// order, each with its own message id so a repeat is acknowledged as a duplicate.
    pub(crate) async fn drain_outbox<P: Projector>(&self, projector: &P) {
        if !self.drain_outbox || !self.signals.outbox_dirty.load(Ordering::Acquire) {
            return;
        }
        let _guard = self.drain_lock.lock().await;
        loop {
            self.signals.outbox_dirty.store(false, Ordering::Release);
            let pending = match self.store.outbox_pending(64).await {
                Ok(pending) => pending,
                Err(e) => {
                    error!(error = %e, "cannot read the outbox; will retry on the next send");
                    self.signals.outbox_dirty.store(true, Ordering::Release);
                    return;
                }
            };
            if pending.is_empty() {
                return;
            }
            for entry in pending {
                let envelope = entry.message.envelope;
                let name = envelope.name.to_string();
                let stream = envelope.stream.to_string();
                let at = || Location::Sending {
                    stream: envelope.stream.clone(),
                };
                let outcome = match command_record(&envelope.name) {
                    Some(record) => match record.decode_stored(
                        &envelope.name,
                        envelope.version,
                        &entry.message.payload,
                        &at,
                    ) {
                        Ok(message) => {
                            let command = OutgoingCommand {
                                envelope,
                                payload: entry.message.payload,
                                message,
                                first_send: false,
                            };
                            self.dispatch(projector, command, true, false).await
                        }
                        Err(e) => Err(e),
                    },
                    None => Err(Error::UnknownMessage {
                        name: name.clone(),
                        at: at(),
                    }),
                };
                match outcome {
                    Ok(_) => {}
                    Err(Error::Store(e)) if e.is_transient() => {
                        warn!(error = %e, command = %name, "follow-up command deferred");
                        self.signals.outbox_dirty.store(true, Ordering::Release);
                        return;
                    }
                    Err(e) => {
                        // A follow-up that can never succeed (refused, unknown, invalid) is
                        // reported and removed, not retried forever.
                        error!(error = %e, command = %name, stream = %stream, "follow-up command failed");
                        metrics::counter!("sourceflow.outbox.failed").increment(1);
                    }
                }
                if let Err(e) = self.store.outbox_remove(&[entry.id]).await {
                    error!(error = %e, "cannot remove a sent outbox entry; it will be re-sent and acknowledged as a duplicate");
                    self.signals.outbox_dirty.store(true, Ordering::Release);
                    return;
                }
            }
        }
    }
}

//! The schedules and cancels of reactions: stored when the reaction has run, before its
//! position is committed. Their ids are derived from the event, so a reaction that runs again
//! stores the same schedules (once) and repeats its cancels (a no-op).

use super::ReadSide;
use crate::base::error::Error;
use crate::context::ReactionContext;
use crate::store::StoreError;

/// Stores what reaction `cx` scheduled and cancelled; delays count from the event's time.
pub(crate) async fn store_reaction_schedules(
    flow: &ReadSide,
    cx: &mut ReactionContext,
) -> Result<(), Error> {
    if cx.scheduling.is_empty() {
        return Ok(());
    }
    let store = flow
        .store
        .schedules()
        .ok_or(StoreError::Unsupported("scheduled commands"))?;
    let at = cx.meta.timestamp;
    let changes = std::mem::take(&mut cx.scheduling).resolve(at);
    let added = changes.add.len() as u64;
    store.add_schedules(changes.add).await?;
    for id in changes.cancel {
        store.cancel_schedule(id, at).await?;
    }
    metrics::counter!("sourceflow.schedule.scheduled").increment(added);
    Ok(())
}

//! The write side's requests around a commit, answered by the read side's views.

use crate::base::message::{CommandReceipt, NewEvent, Position, RecordedEvent, Sequence, StreamId};
use crate::codec::ErasedMessage;
use crate::read::subscriber::{GroupMember as ViewMember, Prepared as PreparedView};
use crate::read::ReadSide;
use crate::store::GroupProjection;
use crate::write::{GroupMember, Prefetch, Prepared, Projector};

impl Projector for ReadSide {
    type Inline<'a> = PreparedView<'a>;

    fn prefetch(&self, stream: &StreamId) -> Vec<Prefetch> {
        self.subscribers
            .iter()
            .enumerate()
            .filter_map(|(view, s)| {
                s.model_to_prefetch(stream)
                    .map(|(model_type, at)| Prefetch {
                        view,
                        model_type,
                        at,
                    })
            })
            .collect()
    }

    fn offer(&self, stream: &StreamId, wanted: &[Prefetch], models: &[Option<Vec<u8>>]) {
        for (prefetch, stored) in wanted.iter().zip(models) {
            if let Some(subscriber) = self.subscribers.get(prefetch.view) {
                subscriber.offer_model(&stream.id, prefetch.at, stored.as_deref());
            }
        }
    }

    async fn prepare_inline<'a>(
        &'a self,
        stream: &StreamId,
        first_sequence: Sequence,
        events: &[NewEvent],
        decoded: &[ErasedMessage],
    ) -> Prepared<PreparedView<'a>> {
        let mut prepared = smallvec::SmallVec::new();
        let mut projections = Vec::new();
        for subscriber in self.subscribers.iter().filter(|s| s.may_prepare(events)) {
            if let Some((ready, projection)) = subscriber
                .prepare_inline(self, stream, first_sequence, events, decoded)
                .await
            {
                prepared.push(ready);
                projections.push(projection);
            }
        }
        (prepared, projections)
    }

    async fn prepare_group<'a>(
        &'a self,
        units: &[GroupMember<'_>],
    ) -> (
        smallvec::SmallVec<[PreparedView<'a>; 2]>,
        Vec<GroupProjection>,
    ) {
        let members: Vec<ViewMember<'_>> = units
            .iter()
            .map(|unit| ViewMember {
                stream: unit.stream,
                first_sequence: unit.first_sequence,
                events: unit.events,
                decoded: unit.decoded,
            })
            .collect();
        let mut prepared = smallvec::SmallVec::new();
        let mut projections = Vec::new();
        for subscriber in &self.subscribers {
            if let Some((ready, projection)) = subscriber.prepare_group(self, &members).await {
                prepared.push(ready);
                projections.push(projection);
            }
        }
        (prepared, projections)
    }

    fn settle(&self, inline: PreparedView<'_>, applied: bool, last: Option<Position>) {
        inline.settle(self, applied, last);
    }

    fn remember(&self, events: &[RecordedEvent], decoded: &[ErasedMessage]) {
        self.recent.record(events, decoded);
    }

    async fn project(&self, receipt: &CommandReceipt, decoded: Vec<ErasedMessage>) {
        self.project_committed(receipt, decoded).await;
    }
}

//! Properties checked over generated interleavings of commits (proptest).

use std::sync::Arc;

use proptest::test_runner::{Config, TestCaseError, TestRunner};
use sourceflow::store::{Store, StoreError};
use sourceflow::{Sequence, StreamId};
use uuid::Uuid;

use crate::records::unit;

/// Random interleavings of commits with right and wrong expected sequences (and races of two
/// commits at once) on three streams keep sequences dense and reject exactly the wrong ones;
/// 32 generated cases, shrunk to the smallest failing one.
///
/// The cases run on a blocking thread of the current tokio runtime, each driven with
/// [`Handle::block_on`](tokio::runtime::Handle::block_on).
pub async fn sequence_invariants_hold_under_random_interleavings(store: Arc<dyn Store>) {
    let runtime = tokio::runtime::Handle::current();
    let outcome = tokio::task::spawn_blocking(move || {
        let config = Config {
            cases: 32,
            failure_persistence: None,
            ..Config::default()
        };
        let ops =
            proptest::collection::vec((0usize..3, -2i64..=2, proptest::bool::weighted(0.2)), 1..40);
        TestRunner::new(config).run(&ops, |ops| {
            runtime
                .block_on(one_case(store.clone(), ops))
                .map_err(TestCaseError::fail)
        })
    })
    .await
    .expect("the property runner does not panic");
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}

/// One case: `ops` are `(stream, offset, race)`. `offset == 0` appends at the right expected
/// sequence, anything else at a wrong one; `race` sends two appends at once with the right
/// expected sequence, of which exactly one must win.
async fn one_case(store: Arc<dyn Store>, ops: Vec<(usize, i64, bool)>) -> Result<(), String> {
    let case = Uuid::now_v7().simple().to_string();
    let streams: Vec<StreamId> = (0..3)
        .map(|i| StreamId::new("conf.Prop", format!("{case}-{i}")))
        .collect();
    let mut model = [0u64; 3];
    let mut accepted: Vec<Vec<Uuid>> = vec![Vec::new(); 3];
    for (index, offset, race) in ops {
        let s = &streams[index];
        let last = model[index];
        if race {
            let (a, b) = (unit(s, last, 1), unit(s, last, 1));
            let (ra, rb) = tokio::join!(store.commit(a.clone()), store.commit(b.clone()));
            let winners: Vec<_> = [(&a, &ra), (&b, &rb)]
                .into_iter()
                .filter(|(_, r)| r.is_ok())
                .collect();
            if winners.len() != 1 {
                return Err(format!("race on {s} at {last}: {ra:?} / {rb:?}"));
            }
            for r in [&ra, &rb] {
                if let Err(e) = r {
                    if !matches!(e, StoreError::Conflict { expected, .. } if expected.0 == last) {
                        return Err(format!("race loser on {s}: {e:?}"));
                    }
                }
            }
            accepted[index].push(winners[0].0.command.envelope.message_id);
            model[index] += 1;
            continue;
        }
        let expected = if offset == 0 {
            last
        } else {
            match last.checked_add_signed(offset) {
                Some(e) if e != last => e,
                _ => last + 1 + offset.unsigned_abs(),
            }
        };
        let u = unit(s, expected, 1);
        let id = u.command.envelope.message_id;
        match (expected == last, store.commit(u).await) {
            (true, Ok(receipt)) if receipt.sequence == Sequence(last + 1) && !receipt.duplicate => {
                accepted[index].push(id);
                model[index] += 1;
            }
            (false, Err(StoreError::Conflict { expected: e, .. })) if e == Sequence(expected) => {}
            (right, outcome) => {
                return Err(format!(
                    "append to {s} at {expected} (last {last}, right: {right}): {outcome:?}"
                ))
            }
        }
    }
    for (i, s) in streams.iter().enumerate() {
        let last = store.last_sequence(s).await.map_err(|e| e.to_string())?;
        if last != Sequence(model[i]) {
            return Err(format!("{s}: last sequence {last}, expected {}", model[i]));
        }
        let commands = store
            .load_commands(s, Sequence(1), None)
            .await
            .map_err(|e| e.to_string())?;
        let sequences: Vec<u64> = commands.iter().map(|c| c.sequence.0).collect();
        if sequences != (1..=model[i]).collect::<Vec<_>>() {
            return Err(format!("{s}: sequences {sequences:?}"));
        }
        let ids: Vec<Uuid> = commands.iter().map(|c| c.envelope.message_id).collect();
        if ids != accepted[i] {
            return Err(format!("{s}: accepted {:?}, stored {ids:?}", accepted[i]));
        }
        let events = store
            .read_stream_range(s, Sequence(1), Sequence(i64::MAX as u64))
            .await
            .map_err(|e| e.to_string())?;
        let event_sequences: Vec<u64> = events.iter().map(|e| e.sequence.0).collect();
        if event_sequences != (1..=model[i]).collect::<Vec<_>>() {
            return Err(format!("{s}: event sequences {event_sequences:?}"));
        }
    }
    Ok(())
}

//! Scheduled commands ([`ScheduleStore`], offered through [`Store::schedules`]): schedules
//! committed with their unit of work and only with it, claims in due order that two callers
//! never share, and cancels that exclude claims.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use sourceflow::schedule::{
    CancelOutcome, NewSchedule, ScheduleChanges, ScheduleId, ScheduleState, ScheduleStore,
};
use sourceflow::store::{Store, StoreError};
use uuid::Uuid;

use crate::records::{base_time, json_of, outbox, stream, unit};

/// The store's scheduling interface; the scenarios of this group need one.
fn schedules(store: &Arc<dyn Store>) -> &dyn ScheduleStore {
    store
        .schedules()
        .expect("the `schedule` group needs a store whose `schedules()` returns `Some`")
}

/// A schedule of a follow-up command to `conf.Account/t`, due at `due`.
pub fn schedule_at(due: DateTime<Utc>, n: i64) -> NewSchedule {
    let id = ScheduleId(Uuid::now_v7());
    let mut command = outbox(&stream("conf.Account", "t"), n);
    command.envelope.message_id = id.message_id();
    NewSchedule { id, due, command }
}

fn at(seconds: i64) -> DateTime<Utc> {
    base_time() + Duration::seconds(seconds)
}

/// A unit's schedules and cancels are committed with it: stored exactly as given, pending.
pub async fn schedules_commit_with_their_unit(store: Arc<dyn Store>) {
    let sched = schedules(&store);
    let s = stream("conf.Account", "a");
    let first = schedule_at(at(60), 1);
    let receipt = sched
        .commit_scheduled(
            unit(&s, 0, 1),
            ScheduleChanges {
                add: vec![first.clone()],
                cancel: vec![],
            },
        )
        .await
        .unwrap();
    assert!(!receipt.duplicate);
    assert_eq!(receipt.events.len(), 1);
    let stored = sched.get_schedule(first.id).await.unwrap().expect("stored");
    assert_eq!(stored.state, ScheduleState::Pending);
    assert_eq!(stored.attempts, 0);
    assert_eq!(stored.schedule.id, first.id);
    assert_eq!(stored.schedule.due, first.due);
    assert_eq!(stored.schedule.command.envelope, first.command.envelope);
    assert_eq!(
        json_of(&stored.schedule.command.payload),
        json_of(&first.command.payload)
    );
    // A later unit cancels it and schedules another.
    let second = schedule_at(at(120), 2);
    sched
        .commit_scheduled(
            unit(&s, 1, 0),
            ScheduleChanges {
                add: vec![second.clone()],
                cancel: vec![first.id],
            },
        )
        .await
        .unwrap();
    let state = |id| async move { sched.get_schedule(id).await.unwrap().map(|r| r.state) };
    assert_eq!(state(first.id).await, Some(ScheduleState::Cancelled));
    assert_eq!(state(second.id).await, Some(ScheduleState::Pending));
    assert_eq!(
        sched
            .get_schedule(ScheduleId(Uuid::now_v7()))
            .await
            .unwrap(),
        None
    );
}

/// A resent unit (a duplicate) and a conflicting one schedule and cancel nothing.
pub async fn refused_units_schedule_nothing(store: Arc<dyn Store>) {
    let sched = schedules(&store);
    let s = stream("conf.Account", "a");
    let kept = schedule_at(at(60), 1);
    let u = unit(&s, 0, 1);
    sched
        .commit_scheduled(
            u.clone(),
            ScheduleChanges {
                add: vec![kept.clone()],
                cancel: vec![],
            },
        )
        .await
        .unwrap();
    let resent = schedule_at(at(60), 2);
    let again = sched
        .commit_scheduled(
            u,
            ScheduleChanges {
                add: vec![resent.clone()],
                cancel: vec![kept.id],
            },
        )
        .await
        .unwrap();
    assert!(again.duplicate);
    let conflicting = schedule_at(at(60), 3);
    let refused = sched
        .commit_scheduled(
            unit(&s, 0, 1),
            ScheduleChanges {
                add: vec![conflicting.clone()],
                cancel: vec![kept.id],
            },
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::Conflict { .. })),
        "{refused:?}"
    );
    assert_eq!(sched.get_schedule(resent.id).await.unwrap(), None);
    assert_eq!(sched.get_schedule(conflicting.id).await.unwrap(), None);
    assert_eq!(
        sched.get_schedule(kept.id).await.unwrap().map(|r| r.state),
        Some(ScheduleState::Pending)
    );
    let pending = sched.pending_schedules(None, 10).await.unwrap();
    assert_eq!(pending.len(), 1);
}

/// Claims take what is due, oldest first, lease it, and take it again only once the lease
/// ended; fired schedules are never claimed again.
pub async fn claims_take_due_schedules_oldest_first(store: Arc<dyn Store>) {
    let sched = schedules(&store);
    // Added in reverse due order.
    let all: Vec<NewSchedule> = (1..=5).rev().map(|i| schedule_at(at(i * 10), i)).collect();
    sched.add_schedules(all.clone()).await.unwrap();
    // Adding an id again changes nothing.
    let mut changed = all[0].clone();
    changed.due = at(1);
    sched.add_schedules(vec![changed]).await.unwrap();

    assert!(sched
        .claim_due(at(9), at(100), 10)
        .await
        .unwrap()
        .is_empty());
    // Leased until 35: claimable again after that, before the schedules due at 40 and 50.
    let claimed = sched.claim_due(at(30), at(35), 10).await.unwrap();
    let dues: Vec<_> = claimed.iter().map(|r| r.schedule.due).collect();
    assert_eq!(dues, [at(10), at(20), at(30)]);
    assert!(claimed
        .iter()
        .all(|r| r.state == ScheduleState::Firing && r.attempts == 1));
    // Leased: nobody else gets them, the rest is not due.
    assert!(sched
        .claim_due(at(34), at(100), 10)
        .await
        .unwrap()
        .is_empty());
    // One is fired; the lease of the others ends, they are claimed again.
    sched
        .mark_fired(&[claimed[0].schedule.id], at(31))
        .await
        .unwrap();
    let again = sched.claim_due(at(100), at(200), 2).await.unwrap();
    assert_eq!(
        again.iter().map(|r| r.schedule.id).collect::<Vec<_>>(),
        [claimed[1].schedule.id, claimed[2].schedule.id]
    );
    assert!(again.iter().all(|r| r.attempts == 2));
    let rest = sched.claim_due(at(100), at(200), 10).await.unwrap();
    assert_eq!(
        rest.iter().map(|r| r.schedule.due).collect::<Vec<_>>(),
        [at(40), at(50)]
    );
    let record = sched
        .get_schedule(claimed[0].schedule.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.state, ScheduleState::Fired);
    assert!(
        sched
            .claim_due(at(10_000), at(20_000), 10)
            .await
            .unwrap()
            .len()
            == 4
    );
}

/// A cancel wins over a later claim and loses to an earlier one, and says which.
pub async fn cancels_and_claims_exclude_each_other(store: Arc<dyn Store>) {
    let sched = schedules(&store);
    let early = schedule_at(at(10), 1);
    let late = schedule_at(at(20), 2);
    sched
        .add_schedules(vec![early.clone(), late.clone()])
        .await
        .unwrap();
    assert_eq!(
        sched.cancel_schedule(late.id, at(0)).await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(
        sched.cancel_schedule(late.id, at(0)).await.unwrap(),
        CancelOutcome::AlreadyCancelled
    );
    let claimed = sched.claim_due(at(30), at(100), 10).await.unwrap();
    assert_eq!(
        claimed.iter().map(|r| r.schedule.id).collect::<Vec<_>>(),
        [early.id]
    );
    assert_eq!(
        sched.cancel_schedule(early.id, at(31)).await.unwrap(),
        CancelOutcome::AlreadyFired
    );
    // A unit's cancel of a claimed schedule changes nothing either.
    let s = stream("conf.Account", "a");
    sched
        .commit_scheduled(
            unit(&s, 0, 0),
            ScheduleChanges {
                add: vec![],
                cancel: vec![early.id],
            },
        )
        .await
        .unwrap();
    assert_eq!(
        sched.get_schedule(early.id).await.unwrap().map(|r| r.state),
        Some(ScheduleState::Firing)
    );
    sched.mark_fired(&[early.id], at(32)).await.unwrap();
    assert_eq!(
        sched.cancel_schedule(early.id, at(33)).await.unwrap(),
        CancelOutcome::AlreadyFired
    );
    assert_eq!(
        sched
            .cancel_schedule(ScheduleId(Uuid::now_v7()), at(33))
            .await
            .unwrap(),
        CancelOutcome::NotFound
    );
    assert!(sched.pending_schedules(None, 10).await.unwrap().is_empty());
}

/// A released claim may be claimed again from the given time on, and stays uncancellable.
pub async fn released_claims_are_claimed_again_but_never_cancelled(store: Arc<dyn Store>) {
    let sched = schedules(&store);
    let one = schedule_at(at(10), 1);
    sched.add_schedules(vec![one.clone()]).await.unwrap();
    assert_eq!(
        sched.claim_due(at(10), at(1_000), 10).await.unwrap().len(),
        1
    );
    sched.release_claims(&[one.id], at(20)).await.unwrap();
    assert_eq!(
        sched.cancel_schedule(one.id, at(15)).await.unwrap(),
        CancelOutcome::AlreadyFired
    );
    assert!(sched
        .claim_due(at(19), at(1_000), 10)
        .await
        .unwrap()
        .is_empty());
    let again = sched.claim_due(at(20), at(1_000), 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].state, again[0].attempts),
        (ScheduleState::Firing, 2)
    );
    sched.mark_fired(&[one.id], at(21)).await.unwrap();
    // Releasing a fired schedule changes nothing.
    sched.release_claims(&[one.id], at(22)).await.unwrap();
    assert!(sched
        .claim_due(at(10_000), at(20_000), 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        sched.get_schedule(one.id).await.unwrap().map(|r| r.state),
        Some(ScheduleState::Fired)
    );
}

/// Four claimers racing over 300 due schedules take each exactly once.
pub async fn concurrent_claims_never_share_a_schedule(store: Arc<dyn Store>) {
    let all: Vec<NewSchedule> = (0..300).map(|i| schedule_at(at(i % 17), i)).collect();
    schedules(&store).add_schedules(all.clone()).await.unwrap();
    let claimers: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let claimed = schedules(&store)
                        .claim_due(at(100), at(1_000), 7)
                        .await
                        .unwrap();
                    if claimed.is_empty() {
                        return mine;
                    }
                    mine.extend(claimed.into_iter().map(|r| r.schedule.id));
                }
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for claimer in claimers {
        for id in claimer.await.unwrap() {
            assert!(seen.insert(id), "{id} claimed twice");
        }
    }
    assert_eq!(seen.len(), 300);
}

/// A cancel racing a claim of the same due schedule, 200 times: each schedule ends cancelled
/// (and unclaimed) or claimed (and the cancel says it came too late), never both or neither.
pub async fn cancel_racing_claim_has_one_winner(store: Arc<dyn Store>) {
    let (mut cancelled, mut fired) = (0, 0);
    for i in 0..200 {
        let schedule = schedule_at(at(0), i);
        let id = schedule.id;
        schedules(&store)
            .add_schedules(vec![schedule])
            .await
            .unwrap();
        let (a, b) = (store.clone(), store.clone());
        let claim =
            tokio::spawn(
                async move { schedules(&a).claim_due(at(1), at(1_000), 10).await.unwrap() },
            );
        let cancel =
            tokio::spawn(async move { schedules(&b).cancel_schedule(id, at(1)).await.unwrap() });
        let (claimed, outcome) = (claim.await.unwrap(), cancel.await.unwrap());
        let was_claimed = claimed.iter().any(|r| r.schedule.id == id);
        match outcome {
            CancelOutcome::Cancelled => {
                assert!(!was_claimed, "cancelled and claimed");
                cancelled += 1;
            }
            CancelOutcome::AlreadyFired => {
                assert!(was_claimed, "neither cancelled nor claimed");
                fired += 1;
            }
            other => panic!("unexpected cancel outcome {other:?}"),
        }
        let state = schedules(&store)
            .get_schedule(id)
            .await
            .unwrap()
            .unwrap()
            .state;
        assert_eq!(
            state,
            if was_claimed {
                ScheduleState::Firing
            } else {
                ScheduleState::Cancelled
            }
        );
        schedules(&store).mark_fired(&[id], at(2)).await.unwrap();
    }
    eprintln!("cancel won {cancelled}, claim won {fired}");
}

/// Open schedules page in due order; settled ones are not listed.
pub async fn pending_schedules_page_in_due_order(store: Arc<dyn Store>) {
    let sched = schedules(&store);
    let all: Vec<NewSchedule> = (0..7).map(|i| schedule_at(at(100 - i * 10), i)).collect();
    sched.add_schedules(all.clone()).await.unwrap();
    sched.cancel_schedule(all[0].id, at(0)).await.unwrap();
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = sched.pending_schedules(after, 4).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some((last.schedule.due, last.schedule.id));
        listed.extend(page.iter().map(|r| r.schedule.due));
    }
    assert_eq!(listed, [at(40), at(50), at(60), at(70), at(80), at(90)]);
}

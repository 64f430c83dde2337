//! The read side: what a `#[projects_on]` method gets to read and write view models.

use foldhash::HashMap;
use std::any::Any;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use crate::base::error::{Error, Location};
use crate::base::message::{EntityId, EventMeta, ViewModel};
use crate::store::{ModelWrite, Store};

struct Slot {
    state: Option<Box<dyn Any + Send>>,
    dirty: bool,
    encode: fn(&(dyn Any + Send)) -> Result<Vec<u8>, crate::codec::storable::EncodeError>,
}

/// Decoded view models as this process last committed (or read) them, kept between batches so
/// that a projection does not read and decode its model again for every event.
///
/// It belongs to one view and is only used under that view's lock, while the view's position
/// in this process is known. A cached model is valid because every change to a view's models
/// also moves the view's stored position: a write computed from a model that another process
/// has changed since fails its position compare-and-set, and the runtime then drops the cache.
/// A missing entry just means "read it from the store".
#[derive(Default)]
pub(crate) struct ModelCache {
    entries: HashMap<(&'static str, EntityId), Option<Box<dyn Any + Send>>>,
    /// The last batch's slot table, emptied: the next batch fills it again instead of
    /// allocating one (a batch per command when commands project inline).
    spare: HashMap<(&'static str, EntityId), Slot>,
}

impl ModelCache {
    /// Models kept per view; past this the cache starts over (reading is always correct).
    const CAPACITY: usize = 10_000;

    /// True if the cache knows model `id` of `model_type` (present or absent).
    pub(crate) fn contains(&self, model_type: &'static str, id: &EntityId) -> bool {
        self.entries.contains_key(&(model_type, id.clone()))
    }

    /// Adds model `id` as just read from the store (`None`: absent), unless the cache already
    /// knows it or is full.
    pub(crate) fn offer(
        &mut self,
        model_type: &'static str,
        id: EntityId,
        model: Option<Box<dyn Any + Send>>,
    ) {
        if self.entries.len() < Self::CAPACITY {
            self.entries.entry((model_type, id)).or_insert(model);
        }
    }
}

/// The largest slot table a view keeps for its next batch.
const SPARE_SLOTS: usize = 64;

/// Loads and saves view models for a projection.
///
/// A projection taking `&mut Model` gets the model keyed by the event's entity id (or by the
/// field named in `#[projects_on(id = field)]`); one taking `&mut ViewContext` can touch any
/// number of models by id, e.g. a customer's list of orders. Writes are buffered and committed
/// together with the view's position, so a batch of events is applied exactly once.
pub struct ViewContext {
    store: Arc<dyn Store>,
    meta: Option<EventMeta>,
    slots: HashMap<(&'static str, EntityId), Slot>,
    cache: ModelCache,
}

impl ViewContext {
    /// A context reading through `cache` (which it takes over until
    /// [`into_cache`](Self::into_cache)).
    pub(crate) fn new(store: Arc<dyn Store>, mut cache: ModelCache) -> Self {
        Self {
            store,
            meta: None,
            slots: std::mem::take(&mut cache.spare),
            cache,
        }
    }

    pub(crate) fn set_meta(&mut self, meta: EventMeta) {
        self.meta = Some(meta);
    }

    /// Metadata of the event being projected.
    ///
    /// # Panics
    /// Never during a projection: the runtime sets it before calling the method.
    pub fn meta(&self) -> &EventMeta {
        self.meta
            .as_ref()
            .expect("ViewContext::meta is set before every projection call")
    }

    /// The model `id` of type `M`, as this batch left it (or as stored).
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails, [`Error::Decode`] if the stored model no longer
    /// matches `M`.
    pub async fn load<M: ViewModel>(&mut self, id: &EntityId) -> Result<Option<M>, Error> {
        let slot = self.slot::<M>(id).await?;
        Ok(slot
            .state
            .as_ref()
            .and_then(|s| s.downcast_ref::<M>())
            .cloned())
    }

    /// Model `id` of type `M` for changing in place (`M::default()` if there is none yet),
    /// written at the end of the batch like [`save`](Self::save).
    pub(crate) async fn model_mut<M: ViewModel>(&mut self, id: &EntityId) -> Result<&mut M, Error> {
        let slot = self.slot::<M>(id).await?;
        slot.dirty = true;
        if !slot.state.as_ref().is_some_and(|s| s.is::<M>()) {
            slot.state = Some(Box::new(M::default()));
        }
        slot.state
            .as_mut()
            .and_then(|s| s.downcast_mut::<M>())
            .ok_or_else(|| Error::Config(vec![format!("view model {} changed type", M::NAME)]))
    }

    /// The batch's slot for model `id` of type `M`, filled from the cache or the store on
    /// first use.
    async fn slot<M: ViewModel>(&mut self, id: &EntityId) -> Result<&mut Slot, Error> {
        let vacant = match self.slots.entry((M::NAME, id.clone())) {
            Entry::Occupied(slot) => return Ok(slot.into_mut()),
            Entry::Vacant(vacant) => vacant,
        };
        let state =
            match self.cache.entries.remove(vacant.key()) {
                Some(cached) if cached.as_ref().is_none_or(|state| state.is::<M>()) => cached,
                _ => match self.store.get_model(M::NAME, id).await? {
                    Some(bytes) => Some(Box::new(crate::codec::decode_model::<M>(id, &bytes)?)
                        as Box<dyn Any + Send>),
                    None => None,
                },
            };
        Ok(vacant.insert(Slot {
            state,
            dirty: false,
            encode: crate::codec::StateVtable::view_model::<M>().encode,
        }))
    }

    /// The model `id`, or `M::default()` if there is none yet.
    ///
    /// # Errors
    /// As [`ViewContext::load`].
    pub async fn load_or_default<M: ViewModel>(&mut self, id: &EntityId) -> Result<M, Error> {
        Ok(self.load::<M>(id).await?.unwrap_or_default())
    }

    /// Writes model `id`; committed with the view's position at the end of the batch.
    pub fn save<M: ViewModel>(&mut self, id: &EntityId, model: M) {
        self.slots.insert(
            (M::NAME, id.clone()),
            Slot {
                state: Some(Box::new(model)),
                dirty: true,
                encode: crate::codec::StateVtable::view_model::<M>().encode,
            },
        );
    }

    /// Deletes model `id` of type `M`.
    pub fn delete<M: ViewModel>(&mut self, id: &EntityId) {
        self.slots.insert(
            (M::NAME, id.clone()),
            Slot {
                state: None,
                dirty: true,
                encode: crate::codec::StateVtable::view_model::<M>().encode,
            },
        );
    }

    /// The buffered writes, encoded (the buffer stays, for [`into_cache`](Self::into_cache)).
    pub(crate) fn take_writes(&mut self) -> Result<Vec<ModelWrite>, Error> {
        let mut writes = Vec::new();
        for ((model_type, id), slot) in &self.slots {
            if !slot.dirty {
                continue;
            }
            let state = match &slot.state {
                Some(state) => Some((slot.encode)(state.as_ref()).map_err(|e| {
                    e.into_error(model_type, || Location::ViewModel {
                        model_type: (*model_type).to_owned(),
                        id: id.clone(),
                    })
                })?),
                None => None,
            };
            writes.push(ModelWrite {
                model_type: std::borrow::Cow::Borrowed(*model_type),
                id: id.clone(),
                state,
            });
        }
        Ok(writes)
    }

    /// Ends the batch and hands back the model cache: with this batch's models when its writes
    /// were `committed`, and otherwise with only the models it read unchanged.
    pub(crate) fn into_cache(self, committed: bool) -> ModelCache {
        let (mut cache, mut slots) = (self.cache, self.slots);
        if cache.entries.len() + slots.len() > ModelCache::CAPACITY {
            cache.entries.clear();
        }
        for (key, slot) in slots.drain() {
            if committed || !slot.dirty {
                cache.entries.insert(key, slot.state);
            }
        }
        // A batch that touched many models (a rebuild's) does not keep its large table.
        if slots.capacity() <= SPARE_SLOTS {
            cache.spare = slots;
        }
        cache
    }
}

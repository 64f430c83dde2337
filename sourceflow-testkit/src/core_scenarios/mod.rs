//! The `core` group: the contract of [`Store`](sourceflow::store::Store) that the runtime
//! relies on, for every store.
//!
//! Each scenario takes a fresh, empty store and uses only the core trait: no
//! [`StoreAdmin`](sourceflow::store::StoreAdmin) method, and
//! [`commit_inline`](sourceflow::store::Store::commit_inline) as provided or overridden alike.

mod command_log;
mod entities;
mod idempotency;
mod outbox;
mod properties;
mod read_side;

pub use command_log::{
    append_at_existing_sequence_conflicts, large_and_non_ascii_payloads_round_trip,
    range_reads_are_inclusive, sequences_are_dense_from_one,
    streams_of_different_types_are_isolated, ten_thousand_commands_load_in_order,
};
pub use entities::{entity_versions_are_optimistic, entity_with_models_reads_both};
pub use idempotency::{
    concurrent_duplicates_commit_once, resent_message_id_is_accepted_once,
    resent_message_id_is_found_in_a_long_stream,
};
pub use outbox::outbox_pending_and_remove;
pub use properties::sequence_invariants_hold_under_random_interleavings;
pub use read_side::{
    commit_projection_is_compare_and_set, positions_are_per_handler,
    read_all_pages_in_global_order, reset_projection_clears_models_and_position,
    view_models_page_in_id_order,
};

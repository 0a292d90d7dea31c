//! The conformance cases. Each is an `async fn(&dyn Harness)` that panics on
//! failure; [`conformance_suite!`](crate::conformance_suite) turns them into
//! tests for one backend.

mod bad_input;
mod cancellation;
mod combining;
mod engine;
mod leader;
mod leases;
mod linearizable;
mod locks;
mod refs;
mod streams;

pub use bad_input::*;
pub use cancellation::*;
pub use combining::*;
pub use engine::*;
pub use leader::*;
pub use leases::*;
pub use linearizable::*;
pub use locks::*;
pub use refs::*;
pub use streams::*;

/// Generates one `#[tokio::test]` per conformance case for a backend.
///
/// The argument is a closure returning a future of a fresh
/// [`Harness`](crate::Harness) for each test.
#[macro_export]
macro_rules! conformance_suite {
    ($harness:expr) => {
        $crate::conformance_suite!(@cases $harness;
            // cases that cut a node off through its fault-injecting wrapper
            lost_session_fails_holder_and_frees_lock,
            a_grant_that_arrives_too_late_is_not_used,
            a_dropped_release_still_frees_the_lock,
            leader_failover_on_silent_death,
            // engine contract
            engine_conditions_and_rejections,
            engine_revisions_increase,
            engine_put_diffs_fields,
            engine_patch_and_field_condition,
            engine_watch_since_resyncs,
            engine_list_reads_a_prefix,
            engine_prefix_watch_follows_every_key_under_it,
            // refs
            create_set_get,
            make_attaches_to_existing,
            auto_ids_match_across_nodes,
            set_if_absent_and_delete,
            modify_family,
            async_modify_family,
            failing_closure_aborts_update,
            concurrent_updates_are_atomic,
            concurrent_history_is_linearizable,
            combined_updates_get_their_own_results,
            combined_field_updates_get_their_own_results,
            peek_follows_remote_writes,
            codecs_round_trip,
            // change streams
            change_stream_observes_sets_in_order,
            change_stream_reports_deletes,
            values_stream_and_on_change,
            slow_subscriber_is_resynced,
            // locks
            lock_contention_serializes,
            lock_contention_is_fenced,
            fencing_tokens_increase,
            try_lock_and_timeout,
            stolen_lock_fails_holder,
            guard_release_and_drop,
            paused_holder_is_told_lock_lost,
            lock_records_follow_the_documented_layout,
            // leases
            lease_expiry_deletes_and_notifies,
            lease_keep_alive_and_revoke,
            // leader election
            campaign_observe_resign,
            leader_failover_on_shutdown,
            // cancellation
            cancelled_acquisitions_leave_no_lock_behind,
            cancelled_updates_apply_at_most_once,
            cancelled_field_writes_apply_at_most_once,
            // bad input
            type_mismatch_is_reported,
            corrupt_bytes_are_reported,
            oversized_values_are_rejected,
            field_writes_respect_the_record_limit,
        );
    };
    (@cases $harness:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let harness = ($harness)().await;
                $crate::conformance::$case(&harness).await;
            }
        )*
    };
}

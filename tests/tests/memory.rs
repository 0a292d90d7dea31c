//! The conformance suite on the in-memory backend, reached two ways.

/// Through the `Backend` trait (and the fault-injecting wrapper).
mod through_the_trait {
    dref_tests::conformance_suite!(|| async { dref_tests::MemoryHarness::new() });
}

/// Called directly, as `Context::local()` does (refs skip the boxed
/// `Backend` futures, and single-field updates write in place). Every case
/// but the two that inject faults through the wrapper.
mod direct {
    dref_tests::conformance_suite!(@cases || async { dref_tests::MemoryHarness::direct() };
        engine_conditions_and_rejections,
        engine_revisions_increase,
        engine_put_diffs_fields,
        engine_patch_and_field_condition,
        engine_watch_since_resyncs,
        create_set_get,
        make_attaches_to_existing,
        auto_ids_match_across_nodes,
        set_if_absent_and_delete,
        modify_family,
        async_modify_family,
        failing_closure_aborts_update,
        concurrent_updates_are_atomic,
        concurrent_history_is_linearizable,
        peek_follows_remote_writes,
        codecs_round_trip,
        change_stream_observes_sets_in_order,
        change_stream_reports_deletes,
        values_stream_and_on_change,
        slow_subscriber_is_resynced,
        lock_contention_serializes,
        lock_contention_is_fenced,
        fencing_tokens_increase,
        try_lock_and_timeout,
        stolen_lock_fails_holder,
        guard_release_and_drop,
        lease_expiry_deletes_and_notifies,
        lease_keep_alive_and_revoke,
        campaign_observe_resign,
        leader_failover_on_shutdown,
        type_mismatch_is_reported,
        corrupt_bytes_are_reported,
        oversized_values_are_rejected,
    );
}

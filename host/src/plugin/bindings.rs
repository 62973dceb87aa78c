//! Host-side bindings for the `wasmgate:plugin` WIT package: the one `bindgen!` in the host.
//!
//! Generated from a world that exports every interface a plugin may export (both forms of the
//! router, the probe evaluator and the message filter); a plugin is driven through the per-interface
//! `GuestIndices`, which look up only the exports it has.

wasmtime::component::bindgen!({
    path: "../wit",
    inline: "
        package wasmgate:gateway;

        world plugins {
            import wasmgate:plugin/host@0.1.2;
            export wasmgate:plugin/lifecycle@0.1.2;
            export wasmgate:plugin/router@0.1.2;
            export wasmgate:plugin/packed-router@0.1.2;
            export wasmgate:plugin/probe-evaluator@0.1.2;
            export wasmgate:plugin/message-filter@0.1.2;
        }
    ",
    world: "wasmgate:gateway/plugins",
    // Calls into plugins run on fibers so that an epoch tick can yield to the tokio scheduler.
    exports: { default: async },
    additional_derives: [PartialEq, Eq],
});

//! Host-side bindings for the `wasmgate:plugin` WIT package: the one `bindgen!` in the host.
//!
//! Generated from the union world `router-and-probe-plugin`; a plugin that exports only one of
//! the two roles is driven through the per-interface `GuestIndices`, which look up only the
//! exports that role needs.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "router-and-probe-plugin",
    // Calls into plugins run on fibers so that an epoch tick can yield to the tokio scheduler.
    exports: { default: async },
    additional_derives: [PartialEq, Eq],
});

//! Guest-side bindings for the types and the host interface of `wasmgate:plugin@0.1.2`.
//!
//! Only imports are generated here: the exports of a world are generated in the plugin's own
//! crate by the `export_*!` macros, so that a component exports exactly its world.

wit_bindgen::generate!({
    path: "../wit",
    inline: "
        package wasmgate:sdk;

        world imports {
            import wasmgate:plugin/types@0.1.2;
            import wasmgate:plugin/host@0.1.2;
            import wasmgate:plugin/message-types@0.1.2;
        }
    ",
    world: "wasmgate:sdk/imports",
    generate_all,
    additional_derives: [PartialEq, Eq],
});

//! What the `wasmgate` command adds to the gateway library: the command line's template options,
//! the demo, the clients of a running gateway's admin API, and following a configuration kept
//! in etcd.

pub mod admin;
pub mod authoring;
pub mod demo;
pub mod fleet;
pub mod registry;
pub mod supervisor;
pub mod template;
pub mod upgrade;

//! Clients of a running gateway's admin API ([`wasmgate::admin`]), for `wasmgate health`,
//! `wasmgate reload`, `wasmgate drain` and `wasmgate plugin`.

pub mod client;
pub mod drain;
pub mod plugin_client;

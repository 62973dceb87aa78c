//! Clients of a running gateway's admin API ([`wasmgate::admin`]), for `wasmgate health`,
//! `wasmgate reload` and `wasmgate plugin`.

pub mod client;
pub mod plugin_client;

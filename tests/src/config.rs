//! TOML snippets for test configurations. Tests write their configuration as TOML text so that a
//! failing test shows the exact configuration; these helpers only spare the repetition.
//!
//! Every listener binds 127.0.0.1; port 0 gives it a free port of its own.

use std::net::SocketAddr;

use crate::pool_entries;

/// A listener on 127.0.0.1. `port` 0 asks for a free port; `hosts` empty makes it basic.
pub fn listener(name: &str, port: u16, hosts: &[&str]) -> String {
    let hosts = hosts
        .iter()
        .map(|h| format!("{h:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[[listeners]]\nname = {name:?}\nport = {port}\nbind_address = \"127.0.0.1\"\nhost_names = [{hosts}]\n\n"
    )
}

/// A backend pool of these addresses.
pub fn pool(name: &str, addrs: &[SocketAddr]) -> String {
    format!(
        "[[backend_pools]]\nname = {name:?}\naddresses = [{}]\n\n",
        pool_entries(addrs)
    )
}

/// Backend settings on port 80 (pool entries carry their own ports), plus `extra` lines such as
/// `request_timeout = "300ms"`.
pub fn settings(name: &str, extra: &str) -> String {
    format!("[[backend_settings]]\nname = {name:?}\nport = 80\n{extra}\n\n")
}

/// A basic rule forwarding `listener` to `pool` with `settings`, plus `extra` lines such as
/// `priority = 10` or `rewrite_set = "rw"`.
pub fn basic_rule(name: &str, listener: &str, pool: &str, settings: &str, extra: &str) -> String {
    format!(
        "[[rules]]\nname = {name:?}\nlistener = {listener:?}\nbackend_pool = {pool:?}\nbackend_settings = {settings:?}\n{extra}\n\n"
    )
}

/// The common case: listener `web` (port 0) → pool `pool` of `addrs` with settings `settings`
/// (plus `settings_extra`). Append more sections (e.g. `[limits]`) to the returned text.
pub fn single_route(addrs: &[SocketAddr], settings_extra: &str) -> String {
    let mut text = listener("web", 0, &[]);
    text += &pool("pool", addrs);
    text += &settings("settings", settings_extra);
    text += &basic_rule("rule", "web", "pool", "settings", "");
    text
}

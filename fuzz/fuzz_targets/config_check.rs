//! The configuration fuzz target's check, shared with the test suite, which replays the corpus
//! (`fuzz/corpus/config`) through it on every run: any text either loads or is refused with an
//! error that names a field (or the TOML position), never a panic. The text is tried as a whole
//! file, and as the value of each kind of number in a valid configuration.

use wasmgate::config::Config;

const LISTENER: &str = "[[listeners]]\nname = \"web\"\nport = 8080\n";
const POOL: &str = "[[backend_pools]]\nname = \"pool\"\naddresses = [\"10.0.0.4\"]\n";
const RULE: &str = "[[rules]]\nname = \"rule\"\nlistener = \"web\"\nbackend_pool = \"pool\"\nbackend_settings = \"settings\"\n";

/// A valid configuration with `line` in its section: `settings:` and `probe:` lines go into
/// those entries, others (which open their own section) at the end; `{}` is the value.
fn with(line: &str, value: &str) -> String {
    let line = line.replace("{}", value);
    let (mut settings, mut probe, mut tail) = (String::new(), String::new(), String::new());
    if let Some(l) = line.strip_prefix("settings:") {
        settings = l.to_string();
    } else if let Some(l) = line.strip_prefix("probe:") {
        probe = l.to_string();
    } else {
        tail = line;
    }
    format!(
        "{LISTENER}{POOL}[[backend_settings]]\nname = \"settings\"\nport = 80\nprobe = \"p\"\n{settings}\n[[probes]]\nname = \"p\"\n{probe}\n{RULE}{tail}\n"
    )
}

const NUMBERS: &[&str] = &[
    "settings:request_timeout = {}",
    "settings:port = {}",
    "probe:interval = {}",
    "probe:unhealthy_threshold = {}",
    "[limits]\nclient_idle_timeout = {}",
    "[limits]\nshutdown_timeout = {}",
    "[limits]\nmax_header_count = {}",
    "[limits]\nmax_request_body = {}",
    "[limits]\nmax_connections = {}",
    "[[plugins]]\nname = \"r\"\nkind = \"router\"\n[plugins.limits]\ncall_timeout = {}",
    "[[plugins]]\nname = \"r\"\nkind = \"router\"\n[plugins.limits]\nmax_memory_mb = {}",
    "[plugin_engine]\nmax_instances = {}",
    "[admin]\nport = {}",
];

fn refused_or_loaded(text: &str) {
    if let Err(e) = Config::from_toml(text) {
        let message = e.to_string();
        assert!(!message.is_empty(), "an empty configuration error");
    }
}

/// Any text: loaded or refused, never a panic.
pub fn check(text: &str) {
    refused_or_loaded(text);
    // One line: a value, not more sections.
    if !text.contains(['\n', '\r']) {
        for line in NUMBERS {
            refused_or_loaded(&with(line, text));
        }
    }
}

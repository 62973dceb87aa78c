//! Probe load for measuring what health probing costs: `--probe-targets N` adds N probe targets
//! (the bench backend under N backend settings, each with a probe every `--probe-interval`) to
//! the gateway's configuration. They sit behind a listener of their own, so the measured
//! traffic's route is the same with and without them.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

static LOAD: OnceLock<(u32, Duration)> = OnceLock::new();

/// Sets the probe load for every gateway the harness starts.
pub fn configure(targets: u32, interval: Duration) {
    let _ = LOAD.set((targets, interval));
}

/// Configuration to append to a gateway's: empty without probe targets.
pub fn extra_config(backend: SocketAddr) -> String {
    let Some(&(targets, interval)) = LOAD.get().filter(|(n, _)| *n > 0) else {
        return String::new();
    };
    let port = crate::net::free_port().unwrap_or(0);
    let mut toml = format!(
        "\n# Probe load: {targets} targets, one probe each every {} ms.\n\
         [[listeners]]\nname = \"probed\"\nport = {port}\nbind_address = \"127.0.0.1\"\n\n\
         [[backend_pools]]\nname = \"probed\"\naddresses = [\"{backend}\"]\n\n\
         [[probes]]\nname = \"bench-probe\"\npath = \"/\"\ninterval = \"{}ms\"\ntimeout = \"1s\"\n\n\
         [[rules]]\nname = \"probed\"\npriority = 200\nlistener = \"probed\"\nurl_path_map = \"probed\"\n\n\
         [[url_path_maps]]\nname = \"probed\"\ndefault_backend_pool = \"probed\"\ndefault_backend_settings = \"probed-0\"\n\n",
        interval.as_millis(),
        interval.as_millis().max(1),
    );
    for i in 0..targets {
        let _ = write!(
            toml,
            "[[url_path_maps.path_rules]]\nname = \"p{i}\"\npaths = [\"/p{i}/*\"]\nbackend_pool = \"probed\"\nbackend_settings = \"probed-{i}\"\n\n"
        );
    }
    for i in 0..targets {
        let _ = write!(
            toml,
            "[[backend_settings]]\nname = \"probed-{i}\"\nport = 80\nprobe = \"bench-probe\"\n\n"
        );
    }
    toml
}

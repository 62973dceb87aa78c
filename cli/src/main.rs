//! The `wasmgate` command: parse the command line, call the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use wasmgate::listener::Inherited;
use wasmgate::plugin::ArtifactSource;
use wasmgate::upgrade::{self, Takeover};
use wasmgate::workers::WorkerOptions;
use wasmgate::{Config, Gateway, telemetry};
use wasmgate_cli::admin::client::AdminApi;
use wasmgate_cli::admin::{client, plugin_client};
use wasmgate_cli::authoring::AuthoringCommand;
use wasmgate_cli::demo;
use wasmgate_cli::fleet::{self, StoreUrl};
use wasmgate_cli::template::{self, TemplateArgs};

/// Where `--token` is read from when the command line does not give it.
const ADMIN_TOKEN_ENV: &str = "WASMGATE_ADMIN_TOKEN";

/// A programmable HTTP and WebSocket gateway with Azure Application Gateway's semantics.
#[derive(Parser)]
#[command(name = "wasmgate", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write, build and try plugins; load, replace, unload, list, shadow or promote a running
    /// gateway's plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
        /// The gateway's admin listener (http:// or https://).
        #[arg(long, global = true, default_value = "http://127.0.0.1:9190")]
        admin: String,
        /// The admin token, when the admin listener requires one.
        #[arg(long, global = true, env = ADMIN_TOKEN_ENV, hide_env_values = true)]
        token: Option<String>,
        /// For an https:// admin URL: trust the CA certificates in this PEM file (as curl's
        /// --cacert) instead of the system's.
        #[arg(long, global = true, value_name = "FILE")]
        cacert: Option<PathBuf>,
    },
    /// Serve with a configuration file until SIGTERM or Ctrl-C. The file is applied again on
    /// SIGHUP, when it changes, and on `wasmgate reload`. With etcd://HOST:PORT[,…]/PREFIX, the
    /// configuration kept in etcd is followed instead: each change is applied as it is pushed.
    Run {
        /// The gateway configuration (TOML), or the etcd store holding it.
        #[arg(long, short)]
        config: PathBuf,
        #[command(flatten)]
        fleet: fleet::RunArgs,
        /// Do not reload when the configuration file changes (SIGHUP and the admin API still do).
        #[arg(long)]
        no_watch: bool,
        /// Threads serving connections, each accepting on a socket of its own (0: one per core).
        #[arg(long, default_value_t = 0)]
        workers: usize,
        /// Requests a worker serves in a row, without waiting for events, before it offers its
        /// core to other runnable threads (0, the default: never).
        #[arg(long, default_value_t = 0)]
        yield_every: u32,
        /// For a configuration that is an ARM template (`.json`).
        #[command(flatten)]
        template: TemplateArgs,
        /// Run N gateway processes sharing every port, under a supervisor that restarts one
        /// that dies and serves the admin listener for all (0 or 1: one process, no supervisor).
        #[arg(long, default_value_t = 0)]
        processes: usize,
        /// A supervised process's admin socket (set by the supervisor).
        #[arg(long, hide = true, value_name = "SOCKET")]
        child_admin: Option<PathBuf>,
    },
    /// Validate a configuration and load its plugins as `run` would (compile, instantiate,
    /// `init`, samples), print a summary, and exit 1 on the first error.
    Check {
        #[arg(long, short)]
        config: PathBuf,
        /// Check the configuration only: do not load the plugins.
        #[arg(long)]
        no_plugins: bool,
        #[command(flatten)]
        template: TemplateArgs,
    },
    /// Convert an Application Gateway ARM template into a wasmgate configuration (TOML).
    Import {
        /// The template (azuredeploy.json).
        #[arg(long)]
        template: PathBuf,
        #[command(flatten)]
        args: TemplateArgs,
        /// Where to write the configuration (default: standard output); certificates go into
        /// `<name>.certs/` beside it.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Run a self-contained demo: two backends and the gateway in front of them, on loopback.
    Demo {
        /// Port of the demo's main listener; the basic-rule listener takes the next one.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Print the demo's configuration and exit.
        #[arg(long)]
        print_config: bool,
    },
    /// Make a running gateway read its configuration file again and apply it (as SIGHUP does);
    /// prints what changed, or the reason the file was refused (the running one stays).
    Reload {
        /// The gateway's admin listener (http:// or https://).
        #[arg(long, default_value = "http://127.0.0.1:9190")]
        admin: String,
        /// The admin token, when the admin listener requires one.
        #[arg(long, env = ADMIN_TOKEN_ENV, hide_env_values = true)]
        token: Option<String>,
        /// For an https:// admin URL: trust the CA certificates in this PEM file (as curl's
        /// --cacert) instead of the system's.
        #[arg(long, value_name = "FILE")]
        cacert: Option<PathBuf>,
    },
    /// Before stopping a gateway (a Kubernetes preStop hook): it keeps serving but reports
    /// itself not ready (`/api/ready` answers 503), then this waits `--delay` seconds for load
    /// balancers to notice and up to `--wait` more for the work in flight to end.
    Drain {
        /// The gateway's admin listener (http:// or https://).
        #[arg(long, default_value = "http://127.0.0.1:9190")]
        admin: String,
        /// The admin token, when the admin listener requires one.
        #[arg(long, env = ADMIN_TOKEN_ENV, hide_env_values = true)]
        token: Option<String>,
        /// For an https:// admin URL: trust the CA certificates in this PEM file.
        #[arg(long, value_name = "FILE")]
        cacert: Option<PathBuf>,
        #[command(flatten)]
        args: wasmgate_cli::admin::drain::DrainArgs,
    },
    /// Start the binary a running gateway was started from (replaced on disk) and hand it the
    /// listening sockets without closing any (as SIGUSR2 does); the old process finishes its
    /// requests and WebSocket sessions and exits. A new binary that fails to start leaves the
    /// running one serving.
    Upgrade {
        /// The gateway's admin listener (http:// or https://).
        #[arg(long, default_value = "http://127.0.0.1:9190")]
        admin: String,
        /// The admin token, when the admin listener requires one.
        #[arg(long, env = ADMIN_TOKEN_ENV, hide_env_values = true)]
        token: Option<String>,
        /// For an https:// admin URL: trust the CA certificates in this PEM file (as curl's
        /// --cacert) instead of the system's.
        #[arg(long, value_name = "FILE")]
        cacert: Option<PathBuf>,
    },
    /// Push, read or list the configuration a fleet follows in etcd.
    Config {
        #[command(subcommand)]
        command: fleet::ConfigCommand,
    },
    /// The gateways following a configuration in etcd.
    Fleet {
        #[command(subcommand)]
        command: fleet::FleetCommand,
    },
    /// Print the backend health view of a running gateway as a table.
    Health {
        /// The gateway's admin listener (http:// or https://).
        #[arg(long, default_value = "http://127.0.0.1:9190")]
        admin: String,
        /// The admin token, when the admin listener requires one.
        #[arg(long, env = ADMIN_TOKEN_ENV, hide_env_values = true)]
        token: Option<String>,
        /// For an https:// admin URL: trust the CA certificates in this PEM file (as curl's
        /// --cacert) instead of the system's.
        #[arg(long, value_name = "FILE")]
        cacert: Option<PathBuf>,
    },
}

/// `wasmgate plugin ...`: the running gateway's plugins (admin API), or plugins being written.
#[derive(Subcommand)]
enum PluginCommand {
    #[command(flatten)]
    Admin(plugin_client::PluginCommand),
    #[command(flatten)]
    Authoring(AuthoringCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Authoring commands run no gateway; `plugin test` collects the plugin's log itself.
    if let Command::Plugin {
        command: PluginCommand::Authoring(command),
        ..
    } = &cli.command
    {
        return match command.run() {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    telemetry::init();
    let result = match cli.command {
        Command::Check {
            config,
            no_plugins,
            template,
        } => check(&config, no_plugins, &template),
        Command::Import {
            template,
            args,
            output,
        } => template::import(&template, &args, output.as_deref())
            .map(|_| ())
            .map_err(Into::into),
        Command::Run {
            config,
            fleet,
            no_watch,
            workers,
            yield_every,
            template,
            processes,
            child_admin,
        } => {
            let workers = WorkerOptions {
                count: workers,
                yield_every,
            };
            match config.to_str().filter(|c| StoreUrl::is_store(c)) {
                Some(url) => url.parse::<StoreUrl>().map_err(Into::into).and_then(|url| {
                    runtime()?.block_on(run_from_store(fleet.follow(url, workers)))
                }),
                None if processes > 1 => runtime().and_then(|rt| {
                    rt.block_on(wasmgate_cli::supervisor::run(
                        &config,
                        processes,
                        supervised_args(),
                    ))
                }),
                None => runtime().and_then(|rt| {
                    rt.block_on(run(config, no_watch, workers, template, child_admin))
                }),
            }
        }
        Command::Config { command } => runtime().and_then(|rt| {
            print!("{}", rt.block_on(command.run())?);
            Ok(())
        }),
        Command::Fleet { command } => runtime().and_then(|rt| {
            print!("{}", rt.block_on(command.run())?);
            Ok(())
        }),
        Command::Demo { port, print_config } => {
            runtime().and_then(|rt| rt.block_on(run_demo(port, print_config)))
        }
        Command::Reload {
            admin,
            token,
            cacert,
        } => AdminApi::new(&admin, token.as_deref(), cacert.as_deref())
            .map_err(Into::into)
            .and_then(|api| runtime()?.block_on(reload(&api))),
        Command::Drain {
            admin,
            token,
            cacert,
            args,
        } => AdminApi::new(&admin, token.as_deref(), cacert.as_deref())
            .map_err(Into::into)
            .and_then(|api| {
                let left = runtime()?.block_on(wasmgate_cli::admin::drain::drain(&api, &args))?;
                eprintln!("drained: {left} connections and sessions still in flight");
                Ok(())
            }),
        Command::Upgrade {
            admin,
            token,
            cacert,
        } => AdminApi::new(&admin, token.as_deref(), cacert.as_deref())
            .map_err(Into::into)
            .and_then(|api| {
                println!(
                    "{}",
                    runtime()?.block_on(wasmgate_cli::upgrade::upgrade(&api))?
                );
                Ok(())
            }),
        Command::Health {
            admin,
            token,
            cacert,
        } => AdminApi::new(&admin, token.as_deref(), cacert.as_deref())
            .map_err(Into::into)
            .and_then(|api| runtime()?.block_on(health(&api))),
        Command::Plugin {
            command: PluginCommand::Authoring(_),
            ..
        } => unreachable!("run above"),
        Command::Plugin {
            command: PluginCommand::Admin(command),
            admin,
            token,
            cacert,
        } => AdminApi::new(&admin, token.as_deref(), cacert.as_deref())
            .map_err(Into::into)
            .and_then(|api| {
                let out = runtime()?.block_on(command.run(&api))?;
                print!("{out}");
                Ok(())
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")
}

fn check(path: &Path, no_plugins: bool, template: &TemplateArgs) -> anyhow::Result<()> {
    let imported = template::materialize(path, template)?;
    let config = Config::from_file(imported.as_ref().map_or(path, |m| m.config_path.as_path()))?;
    print!("{}", wasmgate::config::summary(&config));
    if no_plugins {
        if !config.plugins.is_empty() {
            println!("plugins not loaded (--no-plugins)");
        }
    } else if config
        .plugins
        .iter()
        .any(|p| p.path.is_some() || p.reference.is_some())
    {
        let slots = runtime()?.block_on(Gateway::check_plugins(config.clone()))?;
        println!("plugins loaded:");
        for (slot, p) in slots.iter().zip(&config.plugins) {
            let Some(version) = slot.active() else {
                continue;
            };
            let report = version.report;
            let samples = match p.samples.len() {
                0 => String::new(),
                1 => ", 1 sample passed".to_owned(),
                n => format!(", {n} samples passed"),
            };
            println!(
                "  {:<20} {} in {} ms, init in {} ms{samples}",
                slot.name(),
                match report.artifact {
                    ArtifactSource::Compiled => "compiled",
                    ArtifactSource::Disk | ArtifactSource::Memory => "read from the cache",
                },
                report.compile_time.as_millis(),
                report.init_time.as_millis(),
            );
        }
    }
    println!("{}: valid", path.display());
    Ok(())
}

/// This command line without `--processes`: what the supervisor starts each process with.
fn supervised_args() -> Vec<std::ffi::OsString> {
    let mut args = Vec::new();
    let mut skip = false;
    for arg in std::env::args_os().skip(1) {
        if skip {
            skip = false;
            continue;
        }
        match arg.to_str() {
            Some("--processes") => skip = true,
            Some(a) if a.starts_with("--processes=") => {}
            _ => args.push(arg),
        }
    }
    args
}

async fn run(
    path: PathBuf,
    no_watch: bool,
    workers: WorkerOptions,
    template: TemplateArgs,
    child_admin: Option<PathBuf>,
) -> anyhow::Result<()> {
    // A template is imported once into a private folder that lives as long as the gateway.
    let imported = template::materialize(&path, &template)?;
    let path = imported.as_ref().map_or(path, |m| m.config_path.clone());
    // Started by a binary upgrade: the running process's sockets first. Whatever fails from
    // here to serving is told to it, and it goes on serving.
    let (takeover, inherited) =
        match Takeover::from_env().context("cannot take over the sockets")? {
            Some((takeover, inherited)) => (Some(takeover), inherited),
            None => (None, Inherited::default()),
        };
    let program = upgrade::Program::current().context("cannot tell this program's path")?;
    let started = async {
        let config = Config::from_file(&path)?;
        match child_admin {
            // One of a supervisor's processes: it ends with the supervisor.
            Some(socket) => {
                upgrade::end_with_parent().context("cannot follow the supervisor")?;
                anyhow::Ok(Gateway::start_supervised(config, workers, socket).await?)
            }
            None => {
                anyhow::Ok(Gateway::start_upgradable(config, workers, program, inherited).await?)
            }
        }
    }
    .await;
    let gateway = match (started, takeover) {
        (Ok(gateway), None) => gateway,
        (Ok(gateway), Some(takeover)) => {
            let previous = takeover.previous_pid();
            takeover
                .ready()
                .context("cannot tell the running process that this one serves")?;
            gateway.release_inherited();
            tracing::info!(previous, "upgrade: serving; the previous process drains");
            gateway
        }
        (Err(e), Some(takeover)) => {
            takeover.failed(&format!("{e:#}"));
            return Err(e);
        }
        (Err(e), None) => return Err(e),
    };
    gateway.set_config_file(path, !no_watch);
    // SIGHUP reloads the configuration and reads the certificates again, as servers
    // conventionally do; an invalid file is reported and the running configuration stays.
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot watch SIGHUP")?;
    // SIGUSR1 reopens the access log file, after logrotate moved it away.
    let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        .context("cannot watch SIGUSR1")?;
    // SIGUSR2 upgrades the binary, as nginx's does (`wasmgate upgrade` through the admin API).
    let mut usr2 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined2())
        .context("cannot watch SIGUSR2")?;
    let stop = wait_for_signal();
    tokio::pin!(stop);
    let handed_over = gateway.handed_over();
    tokio::pin!(handed_over);
    loop {
        tokio::select! {
            r = &mut stop => break r?,
            pid = &mut handed_over => {
                tracing::info!(pid, "the sockets are handed over; finishing the work in flight");
                gateway.drain_after_upgrade().await;
                return Ok(());
            }
            _ = usr2.recv() => {
                tracing::info!("SIGUSR2: upgrading the binary");
                match gateway.upgrade().await {
                    Ok(upgraded) => tracing::info!(pid = upgraded.pid, "upgrade done"),
                    Err(e) => tracing::error!(error = %e, "upgrade failed; this process keeps serving"),
                }
            }
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration and certificates");
                if let Err(e) = gateway.reload_from_file().await {
                    tracing::error!(error = %e, "configuration not reloaded; the running one keeps serving");
                }
                gateway.reload_certificates();
            }
            _ = usr1.recv() => {
                tracing::info!("SIGUSR1: reopening the access log");
                gateway.reopen_access_log();
            }
        }
    }
    tracing::info!("shutting down: finishing in-flight requests");
    gateway.shutdown().await;
    Ok(())
}

/// Serves the configuration kept in etcd, following its changes, until SIGTERM or Ctrl-C.
async fn run_from_store(options: fleet::FollowOptions) -> anyhow::Result<()> {
    let member = fleet::FleetMember::start(options).await?;
    wait_for_signal().await?;
    tracing::info!("shutting down: finishing in-flight requests");
    member.shutdown().await;
    Ok(())
}

async fn run_demo(port: u16, print_config: bool) -> anyhow::Result<()> {
    let mut backends = demo::start_backends()
        .await
        .context("cannot start the demo backends")?;
    if print_config {
        print!("{}", backends.config_toml(port));
        return Ok(());
    }
    let (gateway, moderation_error) = backends.start_gateway(port).await?;
    if let Some(why) = moderation_error {
        tracing::warn!("{why}; the demo runs without it");
    }
    println!("{}", demo::banner(port, backends.moderation()));
    wait_for_signal().await?;
    gateway.shutdown().await;
    backends.shutdown().await;
    Ok(())
}

async fn health(api: &AdminApi) -> anyhow::Result<()> {
    let view = client::fetch(api).await?;
    print!("{}", view.table());
    Ok(())
}

async fn reload(api: &AdminApi) -> anyhow::Result<()> {
    let report = client::reload(api).await?;
    println!("{report}");
    Ok(())
}

/// SIGTERM (how service managers stop us) or Ctrl-C.
async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch SIGTERM")?;
    tokio::select! {
        _ = term.recv() => {}
        r = tokio::signal::ctrl_c() => r.context("cannot watch Ctrl-C")?,
    }
    Ok(())
}

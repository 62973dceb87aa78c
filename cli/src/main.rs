//! The `wasmgate` command: parse the command line, call the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use wasmgate::plugin::ArtifactSource;
use wasmgate::workers::WorkerOptions;
use wasmgate::{Config, Gateway, telemetry};
use wasmgate_cli::admin::client::AdminApi;
use wasmgate_cli::admin::{client, plugin_client};
use wasmgate_cli::demo;
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
    /// Load, replace, unload, list, shadow or promote a running gateway's plugins.
    Plugin {
        #[command(subcommand)]
        command: plugin_client::PluginCommand,
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
    /// SIGHUP, when it changes, and on `wasmgate reload`.
    Run {
        /// The gateway configuration (TOML).
        #[arg(long, short)]
        config: PathBuf,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
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
            no_watch,
            workers,
            yield_every,
            template,
        } => {
            let workers = WorkerOptions {
                count: workers,
                yield_every,
            };
            runtime().and_then(|rt| rt.block_on(run(config, no_watch, workers, template)))
        }
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
        Command::Health {
            admin,
            token,
            cacert,
        } => AdminApi::new(&admin, token.as_deref(), cacert.as_deref())
            .map_err(Into::into)
            .and_then(|api| runtime()?.block_on(health(&api))),
        Command::Plugin {
            command,
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
    } else if config.plugins.iter().any(|p| p.path.is_some()) {
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

async fn run(
    path: PathBuf,
    no_watch: bool,
    workers: WorkerOptions,
    template: TemplateArgs,
) -> anyhow::Result<()> {
    // A template is imported once into a private folder that lives as long as the gateway.
    let imported = template::materialize(&path, &template)?;
    let path = imported.as_ref().map_or(path, |m| m.config_path.clone());
    let config = Config::from_file(&path)?;
    let gateway = Gateway::start_with(config, workers).await?;
    gateway.set_config_file(path, !no_watch);
    // SIGHUP reloads the configuration and reads the certificates again, as servers
    // conventionally do; an invalid file is reported and the running configuration stays.
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot watch SIGHUP")?;
    // SIGUSR1 reopens the access log file, after logrotate moved it away.
    let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        .context("cannot watch SIGUSR1")?;
    let stop = wait_for_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            r = &mut stop => break r?,
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

//! The `wasmgate` command: parse the command line, call the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use wasmgate::{Config, Gateway, demo, telemetry};

/// A programmable HTTP and WebSocket gateway with Azure Application Gateway's semantics.
#[derive(Parser)]
#[command(name = "wasmgate", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with a configuration file until SIGTERM or Ctrl-C.
    Run {
        /// The gateway configuration (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration, print a summary, and exit 1 on the first error.
    Check {
        #[arg(long, short)]
        config: PathBuf,
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
    /// Print the backend health view of a running gateway as a table.
    Health {
        /// The gateway's admin listener.
        #[arg(long, default_value = "http://127.0.0.1:9190")]
        admin: String,
        /// The admin token, when the admin listener requires one (else $WASMGATE_ADMIN_TOKEN).
        #[arg(long)]
        token: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init();
    let result = match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config } => runtime().and_then(|rt| rt.block_on(run(config))),
        Command::Demo { port, print_config } => {
            runtime().and_then(|rt| rt.block_on(run_demo(port, print_config)))
        }
        Command::Health { admin, token } => {
            runtime().and_then(|rt| rt.block_on(health(&admin, token)))
        }
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

fn check(path: &Path) -> anyhow::Result<()> {
    let config = Config::from_file(path)?;
    print!("{}", wasmgate::config::summary(&config));
    println!("{}: valid", path.display());
    Ok(())
}

async fn run(path: PathBuf) -> anyhow::Result<()> {
    let config = Config::from_file(&path)?;
    let gateway = Gateway::start(config).await?;
    // SIGHUP reads the HTTPS listeners' certificates again, as servers conventionally do.
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot watch SIGHUP")?;
    let stop = wait_for_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            r = &mut stop => break r?,
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading certificates");
                gateway.reload_certificates();
            }
        }
    }
    tracing::info!("shutting down: finishing in-flight requests");
    gateway.shutdown().await;
    Ok(())
}

async fn run_demo(port: u16, print_config: bool) -> anyhow::Result<()> {
    let backends = demo::start_backends()
        .await
        .context("cannot start the demo backends")?;
    let toml = backends.config_toml(port);
    if print_config {
        print!("{toml}");
        return Ok(());
    }
    let config = Config::from_toml(&toml).context("the demo configuration")?;
    let gateway = Gateway::start(config).await?;
    println!("{}", demo::banner(port));
    wait_for_signal().await?;
    gateway.shutdown().await;
    backends.shutdown().await;
    Ok(())
}

async fn health(admin: &str, token: Option<String>) -> anyhow::Result<()> {
    let token = token.or_else(|| std::env::var("WASMGATE_ADMIN_TOKEN").ok());
    let view = wasmgate::admin::client::fetch(admin, token.as_deref()).await?;
    print!("{}", view.table());
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

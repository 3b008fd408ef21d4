//! `pipefy-emulator --port 0|N --fixture FILE [...]`: serves until SIGTERM/ctrl-c.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use pipefy_emulator::{EmulatorConfig, Faults, Fixture, MissingIdCode, ValueFormat};

#[derive(Parser, Debug)]
#[command(name = "pipefy-emulator", about = "Local Pipefy GraphQL API emulator")]
struct Args {
    /// Port on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Fixture JSON file (default: the built-in demo fixture).
    #[arg(long)]
    fixture: Option<PathBuf>,
    /// Requests allowed per token per window.
    #[arg(long, default_value_t = 500)]
    rate_limit_requests: u32,
    /// Rate-limit window in seconds.
    #[arg(long, default_value_t = 30)]
    rate_limit_window_secs: u64,
    /// Cap on aliased fields per document.
    #[arg(long)]
    max_aliases: Option<usize>,
    /// Answer nonexistent ids with RESOURCE_NOT_FOUND instead of PERMISSION_DENIED.
    #[arg(long)]
    not_found_for_missing_ids: bool,
    /// Render field values in ISO forms instead of pt-BR.
    #[arg(long)]
    iso_values: bool,
    /// Faults as a JSON object (fields of `Faults`, e.g. '{"seed":3,"reset_rate":0.1}').
    #[arg(long)]
    faults: Option<String>,
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let fixture = match &args.fixture {
        Some(path) => Fixture::from_file(path)?,
        None => Fixture::demo(),
    };
    let faults = match &args.faults {
        Some(text) => serde_json::from_str::<Faults>(text)
            .context("--faults is not a valid Faults JSON object")?,
        None => Faults::default(),
    };
    let config = EmulatorConfig {
        fixture,
        rate_limit_requests: args.rate_limit_requests,
        rate_limit_window: Duration::from_secs(args.rate_limit_window_secs),
        max_aliases: args.max_aliases,
        faults,
        nonexistent_id_code: if args.not_found_for_missing_ids {
            MissingIdCode::ResourceNotFound
        } else {
            MissingIdCode::PermissionDenied
        },
        value_format: if args.iso_values {
            ValueFormat::Iso
        } else {
            ValueFormat::PtBr
        },
        ..EmulatorConfig::default()
    };
    let handle =
        pipefy_emulator::start_on(config, SocketAddr::from(([127, 0, 0, 1], args.port))).await?;
    println!("listening on {}", handle.base_url());
    shutdown_signal().await;
    handle.shutdown().await;
    Ok(())
}

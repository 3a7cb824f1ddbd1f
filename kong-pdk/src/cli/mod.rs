//! A gateway binary in one line (feature `cli`): Kong's command line, serving every plugin
//! linked into the binary.
//!
//! ```no_run
//! // src/bin/kong-gateway.rs of a plugin crate
//! use kong_pdk::Plugin as _;
//!
//! # mod my_plugin { use kong_pdk::prelude::*;
//! #   #[plugin(priority = 1, version = "0.1.0")] pub struct MyPlugin {}
//! #   #[handler] impl Handler for MyPlugin {} }
//! fn main() -> std::process::ExitCode {
//!     // Naming the plugin links it; `plugins = bundled,my-plugin` in kong.conf enables it.
//!     let _ = my_plugin::MyPlugin::NAME;
//!     kong_pdk::cli::main("kong-gateway", &[])
//! }
//! ```
//!
//! The commands, as Kong's:
//!
//! ```text
//! kong-gateway start [-c kong.conf] [-p prefix]   run in the foreground
//! kong-gateway config parse <kong.yml>            validate a declarative configuration
//! kong-gateway health [-p prefix]                 is a gateway running in the prefix?
//! kong-gateway migrations bootstrap|up|list|reset [-c kong.conf] [--yes]
//! kong-gateway version
//! kong-gateway mock-upstream [--listen ADDR]      Kong's test upstream (127.0.0.1:15555, echoes on 15557/15558)
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

pub mod conf;

pub use conf::Settings;

#[derive(Parser)]
#[command(about = "A Kong-compatible API gateway running Rust plugins")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the gateway in the foreground.
    Start {
        /// A kong.conf file.
        #[arg(short = 'c', long = "conf")]
        conf: Option<PathBuf>,
        /// The prefix directory (default: ./prefix).
        #[arg(short = 'p', long)]
        prefix: Option<PathBuf>,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Database schema commands (`database = sqlite | postgres`).
    Migrations {
        #[command(subcommand)]
        command: MigrationsCommand,
        /// A kong.conf file.
        #[arg(short = 'c', long = "conf", global = true)]
        conf: Option<PathBuf>,
        /// The prefix directory (default: ./prefix).
        #[arg(short = 'p', long, global = true)]
        prefix: Option<PathBuf>,
    },
    /// Check whether a gateway runs in the prefix.
    Health {
        /// The prefix directory (default: ./prefix).
        #[arg(short = 'p', long)]
        prefix: Option<PathBuf>,
    },
    /// Print the version.
    Version,
    /// Serve Kong's mock upstream.
    MockUpstream {
        /// The address to listen on.
        #[arg(long, default_value = crate::gateway::mock_upstream::DEFAULT_ADDR)]
        listen: String,
        /// The TCP echo's address (Kong's `mock_upstream_stream_port`); `off` to skip it.
        #[arg(long, default_value = crate::gateway::mock_upstream::DEFAULT_STREAM_ADDR)]
        stream_listen: String,
        /// The TLS echo's address (Kong's `mock_upstream_stream_ssl_port`); `off` to skip it.
        #[arg(long, default_value = crate::gateway::mock_upstream::DEFAULT_STREAM_SSL_ADDR)]
        stream_ssl_listen: String,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Parse and validate a declarative configuration file.
    Parse {
        /// The kong.yml file.
        file: PathBuf,
        /// A kong.conf file (for the `plugins` setting).
        #[arg(short = 'c', long = "conf")]
        conf: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum MigrationsCommand {
    /// Create the schema in an empty database.
    Bootstrap,
    /// Run the migrations not yet applied.
    Up,
    /// List the migrations and whether each has run.
    List,
    /// Drop everything the gateway stored.
    Reset {
        /// Do not ask for confirmation.
        #[arg(short = 'y', long)]
        yes: bool,
    },
}

/// Runs the command line of a gateway binary named `name`, with `bundled` as what `bundled`
/// stands for in the `plugins` setting (the names of the linked plugins to enable by default).
/// Returns the process's exit code; errors are printed as `Error: ...`.
pub fn main(name: &'static str, bundled: &'static [&'static str]) -> ExitCode {
    let matches = Cli::command().name(name).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let load = |conf: Option<PathBuf>, prefix: Option<PathBuf>| {
        Settings::load(conf.as_deref(), prefix).map(|s| Settings { bundled, ..s })
    };
    let result = match cli.command {
        Command::Version => {
            println!(
                "Kong {} (kong-pdk {})",
                crate::gateway::KONG_VERSION,
                env!("CARGO_PKG_VERSION")
            );
            Ok(())
        }
        Command::Start { conf, prefix } => load(conf, prefix).and_then(conf::run),
        Command::Config {
            command: ConfigCommand::Parse { file, conf },
        } => {
            // Without a kong.conf (or KONG_PLUGINS), every plugin the binary links is known.
            let linked = conf.is_none() && std::env::var_os("KONG_PLUGINS").is_none();
            load(conf, None).and_then(|s| conf::parse_config(&s, &file, linked))
        }
        Command::Health { prefix } => conf::health(prefix),
        Command::Migrations { command, conf, prefix } => {
            let action = match command {
                MigrationsCommand::Bootstrap | MigrationsCommand::Up => conf::Migrations::Up,
                MigrationsCommand::List => conf::Migrations::List,
                MigrationsCommand::Reset { yes: false } => {
                    eprintln!("Error: reset drops every entity; run again with --yes to confirm");
                    return ExitCode::FAILURE;
                }
                MigrationsCommand::Reset { yes: true } => conf::Migrations::Reset,
            };
            load(conf, prefix).and_then(|s| conf::migrations(&s, action))
        }
        Command::MockUpstream {
            listen,
            stream_listen,
            stream_ssl_listen,
        } => conf::mock_upstream(&listen, &stream_listen, &stream_ssl_listen),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

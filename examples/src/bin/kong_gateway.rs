//! `kong-gateway`: the example gateway, with Kong's bundled plugins and this crate's examples
//! compiled in. Behaves like Kong's CLI:
//!
//! ```text
//! kong-gateway start [-c kong.conf] [-p prefix]   run in the foreground
//! kong-gateway config parse <kong.yml>            validate a declarative configuration
//! kong-gateway health [-p prefix]                 is a gateway running in the prefix?
//! kong-gateway migrations bootstrap|up|list|reset [-c kong.conf] [--yes]
//! kong-gateway version
//! kong-gateway mock-upstream [--listen ADDR]      Kong's test upstream (127.0.0.1:15555)
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kong_pdk_examples::conf::Settings;

#[derive(Parser)]
#[command(name = "kong-gateway", about = "A Kong-compatible API gateway running Rust plugins")]
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
        #[arg(long, default_value = kong_pdk::gateway::mock_upstream::DEFAULT_ADDR)]
        listen: String,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Version => {
            println!(
                "Kong {} (kong-pdk {})",
                kong_pdk::gateway::KONG_VERSION,
                env!("CARGO_PKG_VERSION")
            );
            Ok(())
        }
        Command::Start { conf, prefix } => {
            Settings::load(conf.as_deref(), prefix).and_then(kong_pdk_examples::conf::run)
        }
        Command::Config {
            command: ConfigCommand::Parse { file, conf },
        } => Settings::load(conf.as_deref(), None).and_then(|s| kong_pdk_examples::conf::parse_config(&s, &file)),
        Command::Health { prefix } => kong_pdk_examples::conf::health(prefix),
        Command::Migrations { command, conf, prefix } => {
            let action = match command {
                MigrationsCommand::Bootstrap | MigrationsCommand::Up => kong_pdk_examples::conf::Migrations::Up,
                MigrationsCommand::List => kong_pdk_examples::conf::Migrations::List,
                MigrationsCommand::Reset { yes: false } => {
                    eprintln!("Error: reset drops every entity; run again with --yes to confirm");
                    return ExitCode::FAILURE;
                }
                MigrationsCommand::Reset { yes: true } => kong_pdk_examples::conf::Migrations::Reset,
            };
            Settings::load(conf.as_deref(), prefix).and_then(|s| kong_pdk_examples::conf::migrations(&s, action))
        }
        Command::MockUpstream { listen } => kong_pdk_examples::conf::mock_upstream(&listen),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

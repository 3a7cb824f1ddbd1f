//! `kong-gateway`: the example gateway, with Kong's bundled plugins and this crate's examples
//! compiled in. Behaves like Kong's CLI (see [`kong_pdk::cli`]):
//!
//! ```text
//! kong-gateway start [-c kong.conf] [-p prefix]   run in the foreground
//! kong-gateway config parse <kong.yml>            validate a declarative configuration
//! kong-gateway health [-p prefix]                 is a gateway running in the prefix?
//! kong-gateway migrations bootstrap|up|list|reset [-c kong.conf] [--yes]
//! kong-gateway version
//! kong-gateway mock-upstream [--listen ADDR]      Kong's test upstream (127.0.0.1:15555)
//! ```

use std::process::ExitCode;

use kong_pdk::Plugin as _;

/// mimalloc: the proxy allocates many short-lived header maps and buffers per request, which
/// glibc's allocator serves markedly slower (see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's option that decides, as the process starts, whether its arenas are committed
/// eagerly (its default on Linux).
const EAGER_COMMIT: &str = "MIMALLOC_ARENA_EAGER_COMMIT";

/// With `MIMALLOC_ARENA_EAGER_COMMIT=0` the gateway starts in about 14 MiB instead of 25, and
/// each idle client connection costs about 8 KiB less, at the same speed (docs/benchmarks.md).
/// mimalloc reads its options from the environment once, before `main`, so unless the operator
/// chose a value the binary executes itself again, once, with the variable set (same process,
/// same arguments). If that fails, it runs as it is.
fn lean_allocator() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os(EAGER_COMMIT).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let mut args = std::env::args_os();
    let mut again = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        again.arg0(arg0);
    }
    // `exec` returns only when it failed.
    let _failed = again.args(args).env(EAGER_COMMIT, "0").exec();
}

fn main() -> ExitCode {
    lean_allocator();
    // Naming the examples links them, so their registrations are present.
    let _ = (
        kong_pdk_examples::my_plugin::MyPlugin::NAME,
        kong_pdk_examples::all_phases::AllPhases::NAME,
        kong_pdk_examples::multi_protocol::MultiProto::NAME,
        kong_pdk_examples::split_plugin::MyCustomPlugin::NAME,
        kong_pdk_examples::ws_redact::WsRedact::NAME,
    );
    kong_pdk::cli::main("kong-gateway", kong_plugins::BUNDLED)
}

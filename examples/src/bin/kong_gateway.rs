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

fn main() -> ExitCode {
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

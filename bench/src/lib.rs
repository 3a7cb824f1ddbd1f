//! Criterion benchmarks of kong-pdk; see `benches/`. Run with `cargo bench -p kong-pdk-bench`.

//! The log the front ends (`vmm`, `vmm-bench`) write to stderr.

/// Logs at `level` (error, warn, info, debug or trace; RUST_LOG overrides)
/// with millisecond timestamps and no module names.
pub fn init(level: &str) {
    let env = env_logger::Env::default().default_filter_or(level);
    env_logger::Builder::from_env(env)
        .format_timestamp_millis()
        .format_target(false)
        .init();
}

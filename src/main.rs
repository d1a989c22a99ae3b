//! The `auditledger` command line. Everything lives in the library half of this package
//! (`src/lib.rs`) so the benchmark programs and the end-to-end tests reuse it.

/// mimalloc instead of the system allocator: reading and verifying a ledger allocates a few
/// small buffers per entry, and with glibc malloc that was ~17% of `verify`'s profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    auditledger::run()
}

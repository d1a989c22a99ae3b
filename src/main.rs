//! The `auditledger` command line. Everything lives in the library half of this package
//! (`src/lib.rs`) so the benchmark program and the end-to-end tests reuse it.

fn main() -> std::process::ExitCode {
    auditledger::run()
}

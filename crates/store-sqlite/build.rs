//! The SQL migrations are embedded at compile time (`refinery::embed_migrations!`), which Cargo
//! does not see as an input: without this, an edited or added migration would not reach an
//! incremental build.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations/sqlite");
    println!("cargo:rerun-if-changed=../../migrations/sqlite-projections");
}

//! Builds the unwind table of each ELF file given and prints its counts and build time:
//! `cargo run --release -p pyro-unwind --example table_stats -- /lib/x86_64-linux-gnu/libc.so.6`.

use std::time::Instant;

fn main() {
    for path in std::env::args().skip(1) {
        let start = Instant::now();
        match pyro_unwind::Table::from_path(path.as_ref()) {
            Ok(table) => println!("{path}: {:?} in {:?}", table.stats(), start.elapsed()),
            Err(e) => println!("{path}: {e}"),
        }
    }
}

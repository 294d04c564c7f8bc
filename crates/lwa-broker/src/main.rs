//! `lwa-broker`: the command line. Glue only; the work is in the `lwa` and `lwa-seal` crates.

mod cli;

fn main() {
    std::process::exit(cli::main());
}

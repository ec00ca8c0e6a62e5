//! `zoo-loadgen`: see `zoo-loadgen --help`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(zoo_loadgen::cli::main(&args));
}

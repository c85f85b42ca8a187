fn main() {
    std::process::exit(nethook::cli::main());
}

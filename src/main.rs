fn main() {
    // CNI_COMMAND in the environment: a CNI plugin invocation, never the command line.
    if nethook::cni::requested() {
        std::process::exit(nethook::cni::main());
    }
    std::process::exit(nethook::cli::main());
}

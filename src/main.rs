fn main() -> std::process::ExitCode {
    crashbox::cli::main()
}

fn main() -> std::process::ExitCode {
    scaletestd::cli::main()
}

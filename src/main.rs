//! The `spanline` command: thin wiring from arguments to the converter (see `cli`).
//!
//! Exit codes: 0 success (also `tail` stopped with Ctrl-C); 1 an input could not be read (a
//! file, a log group, an S3 object) or the configuration is invalid; 2 bad usage; 3 with
//! `--strict`, when malformed span lines were found; 4 the backend could not be reached or kept
//! failing until the retry deadline (try again later); 5 the backend rejected the data (sending
//! it again will not help).

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}

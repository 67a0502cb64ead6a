fn main() {
    if let Err(err) = afclip::cli::main() {
        eprintln!("error: {err:#}");
        std::process::exit(2);
    }
}

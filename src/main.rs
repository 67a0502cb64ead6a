fn main() {
    if let Err(err) = afclip::cli::main() {
        eprintln!("error: {err:#}");
        // 3: the run finished but some inputs failed; 2: the run itself failed.
        let failed_inputs = err.downcast_ref::<afclip::cli::score::InputsFailed>();
        std::process::exit(if failed_inputs.is_some() { 3 } else { 2 });
    }
}

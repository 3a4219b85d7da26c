//! The `cordon` binary: parse the command line, set up logging, run, and map
//! the result to an exit code.
fn main() {}

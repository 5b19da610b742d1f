//! `slim`: the Slim Scheduler operator CLI (the commands are in the library: `slim::app`).

fn main() -> std::process::ExitCode {
    slim::app::main_with(std::env::args_os())
}

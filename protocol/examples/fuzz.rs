//! Fuzz driver for the wire contract: runs mutants of the seed corpus and random byte strings
//! through `slim_protocol::fuzz::exercise`, catching panics per input.
//!
//! ```text
//! cargo run --release -p slim-protocol --features fuzzing --example fuzz -- --inputs 10000000 --seed 1
//! ```
//!
//! Options: `--inputs N` (default 1 000 000), `--seed S` (default 1), `--threads T` (default 1;
//! each thread runs its share with its own seed), `--crashes DIR` (default
//! `/tmp/slim-fuzz-crashes`), `--replay FILE` (run one saved input and report). Every input
//! that panics is written to `DIR/crash-<fnv64 hex>.bin`; the exit status is 1 if any did.
//!
//! Inputs run on threads with a 2 MiB stack, the default of Rust and tokio worker threads, so
//! a payload that would overflow a coordinator's stack overflows here too (that aborts the run:
//! a stack overflow cannot be caught).

use std::{
    cell::RefCell,
    panic::{self, AssertUnwindSafe},
    path::{Path, PathBuf},
    process::ExitCode,
    sync::atomic::{AtomicU64, Ordering},
    time::Instant,
};

use slim_protocol::fuzz::{exercise, Fuzzer, Tally};

const STACK_BYTES: usize = 2 << 20;
const PROGRESS_EVERY: u64 = 1_000_000;

struct Options {
    inputs: u64,
    seed: u64,
    threads: u64,
    crashes: PathBuf,
    replay: Option<PathBuf>,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        inputs: 1_000_000,
        seed: 1,
        threads: 1,
        crashes: PathBuf::from("/tmp/slim-fuzz-crashes"),
        replay: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| {
            v.replace('_', "")
                .parse::<u64>()
                .map_err(|e| format!("{flag} {v}: {e}"))
        };
        match flag.as_str() {
            "--inputs" => o.inputs = number(value()?)?,
            "--seed" => o.seed = number(value()?)?,
            "--threads" => o.threads = number(value()?)?.max(1),
            "--crashes" => o.crashes = value()?.into(),
            "--replay" => o.replay = Some(value()?.into()),
            "-h" | "--help" => {
                return Err("usage: fuzz [--inputs N] [--seed S] [--threads T] \
                            [--crashes DIR] [--replay FILE]"
                    .into())
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(o)
}

thread_local! {
    /// The message and place of the last panic on this thread.
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
}

fn fnv64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Runs one input; the panic message if it panicked.
fn run_one(input: &[u8], tally: &mut Tally) -> Option<String> {
    match panic::catch_unwind(AssertUnwindSafe(|| exercise(input))) {
        Ok(outcome) => {
            tally.add(&outcome);
            None
        }
        Err(_) => {
            tally.inputs += 1;
            Some(LAST_PANIC.with(|p| p.borrow().clone()))
        }
    }
}

fn save_crash(dir: &Path, input: &[u8], message: &str) -> PathBuf {
    let path = dir.join(format!("crash-{:016x}.bin", fnv64(input)));
    if let Err(e) = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, input)) {
        eprintln!("cannot save the crashing input to {}: {e}", path.display());
    }
    eprintln!(
        "PANIC on a {}-byte input, saved to {}: {message}",
        input.len(),
        path.display()
    );
    path
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    install_panic_hook();
    match &options.replay {
        Some(file) => replay(file),
        None => fuzz(&options),
    }
}

/// Records each panic's message and place in [`LAST_PANIC`] instead of printing it.
fn install_panic_hook() {
    panic::set_hook(Box::new(|info| {
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        LAST_PANIC.with(|p| *p.borrow_mut() = format!("{message}{place}"));
    }));
}

/// `--replay FILE`: runs the one saved input and reports its outcome or its panic.
fn replay(file: &Path) -> ExitCode {
    let input = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("cannot read {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let outcome = std::thread::Builder::new()
        .stack_size(STACK_BYTES)
        .spawn(move || panic::catch_unwind(|| exercise(&input)).map_err(|_| ()))
        .expect("spawn")
        .join()
        .expect("the replay thread catches its panics");
    match outcome {
        Ok(outcome) => {
            println!("no panic: {outcome:#?}");
            ExitCode::SUCCESS
        }
        Err(()) => {
            eprintln!("PANIC: {}", LAST_PANIC.with(|p| p.borrow().clone()));
            ExitCode::FAILURE
        }
    }
}

/// Counters the fuzz threads share, for the progress lines and the final count.
struct Progress {
    started: Instant,
    done: AtomicU64,
    panics: AtomicU64,
}

/// Fuzzes `options.inputs` inputs over `options.threads` threads and prints the tally.
fn fuzz(options: &Options) -> ExitCode {
    println!(
        "fuzzing {} inputs, seed {}, {} thread(s); crashes go to {}",
        options.inputs,
        options.seed,
        options.threads,
        options.crashes.display()
    );
    let progress = Progress {
        started: Instant::now(),
        done: AtomicU64::new(0),
        panics: AtomicU64::new(0),
    };
    let mut total = Tally::default();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..options.threads)
            .map(|t| {
                let share = options.inputs / options.threads
                    + u64::from(t < options.inputs % options.threads);
                let progress = &progress;
                std::thread::Builder::new()
                    .stack_size(STACK_BYTES)
                    .spawn_scoped(scope, move || fuzz_share(options, t, share, progress))
                    .expect("spawn a fuzz thread")
            })
            .collect();
        for worker in workers {
            total.merge(&worker.join().expect("fuzz threads catch their panics"));
        }
    });
    let secs = progress.started.elapsed().as_secs_f64();
    let panics = progress.panics.load(Ordering::Relaxed);
    println!("---");
    println!("{total}");
    println!(
        "time:                  {secs:.1} s, {:.0} inputs/s",
        total.inputs as f64 / secs
    );
    println!("panics found:          {panics}");
    if panics > 0 {
        println!("crashing inputs are in {}", options.crashes.display());
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// One thread's `share` of the inputs, from the fuzzer seeded `seed + t`: saves every input
/// that panics and prints a progress line every [`PROGRESS_EVERY`] inputs of all threads.
fn fuzz_share(options: &Options, t: u64, share: u64, progress: &Progress) -> Tally {
    let mut fuzzer = Fuzzer::new(options.seed.wrapping_add(t));
    let mut tally = Tally::default();
    for _ in 0..share {
        let input = fuzzer.next_input();
        if let Some(message) = run_one(&input, &mut tally) {
            save_crash(&options.crashes, &input, &message);
            progress.panics.fetch_add(1, Ordering::Relaxed);
        }
        let n = progress.done.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_multiple_of(PROGRESS_EVERY) {
            let secs = progress.started.elapsed().as_secs_f64();
            println!(
                "{n} inputs, {:.0} s, {:.0} inputs/s, {} panics",
                secs,
                n as f64 / secs,
                progress.panics.load(Ordering::Relaxed)
            );
        }
    }
    tally
}

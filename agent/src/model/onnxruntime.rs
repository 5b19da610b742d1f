//! The optional ONNX Runtime backend (`ort` feature): each width's ONNX file runs in an ort
//! [`Session`] on the CPU. tract stays the default; this one is a measured comparison and a choice
//! for x86 servers (docs/cpu-performance.md).
//!
//! libonnxruntime (1.20, the API of ort 2.0.0-rc.9) is opened at run time: from `ORT_DYLIB_PATH`
//! when set, otherwise `libonnxruntime.so` from the library search path.
//!
//! The backend is chosen like tract's runtimes, as a `&'static dyn Runtime` ([`ORT_RUNTIME`]), so
//! everything that selects a backend and loads families passes it through unchanged;
//! [`ModelFamily::load`](super::ModelFamily::load) recognises it by name and builds sessions from
//! the ONNX files instead of tract plans.

use std::{
    borrow::Cow,
    path::Path,
    sync::{Arc, OnceLock},
};

use ort::session::{builder::GraphOptimizationLevel, Session};
use tract_onnx::prelude::{TractResult, TypedModel};
use tract_onnx::tract_core::runtime::{RunOptions, Runnable, Runtime};

/// The backend's name, as `--backend` and the agent's announcement spell it.
pub const NAME: &str = "ort";

/// What to do when the library cannot be opened.
pub const LIBRARY_HINT: &str = "set ORT_DYLIB_PATH to the absolute path of libonnxruntime.so 1.20.x \
     (for example models/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.1.20.1, \
     which `bash models/build.sh` installs)";

/// Marks the ONNX Runtime backend among tract's runtimes. It does not prepare tract models:
/// families are loaded from their ONNX files by [`ModelFamily::load`](super::ModelFamily::load).
#[derive(Debug)]
pub struct OrtRuntime;

/// The one ONNX Runtime backend.
pub static ORT_RUNTIME: OrtRuntime = OrtRuntime;

impl Runtime for OrtRuntime {
    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed(NAME)
    }

    fn prepare_with_options(
        &self,
        _model: TypedModel,
        _options: &RunOptions,
    ) -> TractResult<Box<dyn Runnable>> {
        anyhow::bail!(
            "the ort backend runs ONNX files, not tract models: load the family with ModelFamily::load"
        )
    }

    fn check(&self) -> TractResult<()> {
        init().map(|_| ()).map_err(anyhow::Error::msg)
    }
}

/// Whether `runtime` is the ONNX Runtime backend.
pub fn is_ort(runtime: &dyn Runtime) -> bool {
    runtime.name() == NAME
}

/// Opens ONNX Runtime (once per process) and returns where it came from and its version, or why
/// it cannot be used, with [`LIBRARY_HINT`].
pub fn init() -> Result<&'static str, String> {
    static LOADED: OnceLock<Result<String, String>> = OnceLock::new();
    LOADED
        .get_or_init(open_library)
        .as_deref()
        .map_err(Clone::clone)
}

fn open_library() -> Result<String, String> {
    let from_env = std::env::var("ORT_DYLIB_PATH")
        .ok()
        .filter(|p| !p.is_empty());
    // ort resolves a relative path against the executable's folder first; the operator means the
    // working directory, so the path is made absolute here.
    let builder = match &from_env {
        Some(path) => {
            let absolute = std::fs::canonicalize(path)
                .map_err(|e| format!("ORT_DYLIB_PATH={path}: {e}; {LIBRARY_HINT}"))?;
            if !absolute.is_file() {
                return Err(format!(
                    "ORT_DYLIB_PATH={path} is not a file; {LIBRARY_HINT}"
                ));
            }
            ort::init_from(absolute.display().to_string())
        }
        None => ort::init(),
    };
    let source = from_env.unwrap_or_else(|| "libonnxruntime.so (library search path)".into());
    // ort panics when the library cannot be opened or is older than 1.20 (on its first call, which
    // opens it); that becomes an error with ort's message, so the panic hook is silenced meanwhile.
    // This runs once per process.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let opened = std::panic::catch_unwind(ort::info);
    std::panic::set_hook(hook);
    let version = build_version(opened.map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "ort panicked".into());
        format!("cannot open ONNX Runtime from {source}: {message}; {LIBRARY_HINT}")
    })?);
    builder
        .with_name("slim-agent")
        .with_telemetry(false)
        .commit()
        .map_err(|e| format!("ONNX Runtime from {source}: {e}"))?;
    Ok(format!("ONNX Runtime {version} from {source}"))
}

/// The release (`1.20.1`) or commit (`git 5c1b7ccbff`) in ONNX Runtime's build string
/// (`ORT Build Info: git-branch=rel-1.20.1, git-commit-id=5c1b7ccbff, …`), or the whole string.
fn build_version(info: &str) -> String {
    let field = |name: &str| {
        let start = info.find(name)? + name.len();
        let value = info[start..].split(',').next()?.trim();
        (!value.is_empty()).then(|| value.to_string())
    };
    field("git-branch=rel-")
        .or_else(|| field("git-commit-id=").map(|id| format!("git {id}")))
        .unwrap_or_else(|| info.to_string())
}

/// A session for one ONNX file on the CPU: `threads` intra-op threads (1 = the caller's thread
/// only), one inter-op thread, every graph optimisation.
pub fn session(path: &Path, threads: usize) -> Result<Arc<Session>, String> {
    init()?;
    Session::builder()
        .and_then(|b| b.with_optimization_level(GraphOptimizationLevel::Level3))
        .and_then(|b| b.with_intra_threads(threads.max(1)))
        .and_then(|b| b.with_inter_threads(1))
        .and_then(|b| b.commit_from_file(path))
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// Runs `input` (shape `shape`, row-major) through the session's first input and returns its first
/// output, flattened.
pub fn run(session: &Session, shape: Vec<usize>, input: Vec<f32>) -> Result<Vec<f32>, String> {
    let tensor = ort::value::Tensor::from_array((shape, input)).map_err(|e| e.to_string())?;
    let inputs = ort::inputs![tensor].map_err(|e| e.to_string())?;
    let outputs = session.run(inputs).map_err(|e| e.to_string())?;
    let (_, logits) = outputs[0]
        .try_extract_raw_tensor::<f32>()
        .map_err(|e| e.to_string())?;
    Ok(logits.to_vec())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_version_is_read_from_the_build_string() {
        let info =
            "ORT Build Info: git-branch=rel-1.20.1, git-commit-id=5c1b7cc, build type=Release";
        assert_eq!(super::build_version(info), "1.20.1");
        let pip = "ORT Build Info: git-branch=HEAD, git-commit-id=5c1b7ccbff, build type=Release";
        assert_eq!(super::build_version(pip), "git 5c1b7ccbff");
        assert_eq!(super::build_version("other"), "other");
    }
}

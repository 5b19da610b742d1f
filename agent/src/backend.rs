//! Choosing the inference backend: tract's CUDA runtime when asked for and usable, else the CPU;
//! ONNX Runtime only when asked for (`ort` feature).

use serde::{Deserialize, Serialize};
use tract_onnx::tract_core::runtime::{DefaultRuntime, Runtime};

/// What the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// CUDA when it can be loaded, otherwise the CPU.
    Auto,
    /// tract's CUDA runtime; start-up fails when it is unusable.
    Cuda,
    /// tract on the CPU.
    Cpu,
    /// ONNX Runtime on the CPU (builds with the `ort` feature; libonnxruntime 1.20 is opened at
    /// run time from ORT_DYLIB_PATH); start-up fails when it is unusable. Never chosen by `auto`.
    Ort,
}

impl BackendChoice {
    /// The name `--backend` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendChoice::Auto => "auto",
            BackendChoice::Cuda => "cuda",
            BackendChoice::Cpu => "cpu",
            BackendChoice::Ort => "ort",
        }
    }
}

/// The backend in use and why.
#[derive(Debug, Clone, Copy)]
pub struct SelectedBackend {
    /// `cpu`, `cuda` or `ort`.
    pub name: &'static str,
    /// The tract runtime (for `ort`, a marker that `ModelFamily::load` recognises).
    pub runtime: &'static dyn Runtime,
}

static CPU: DefaultRuntime = DefaultRuntime;

/// Picks the backend for `choice`; returns it with the reason, or why CUDA was required but unusable.
pub fn select_backend(choice: BackendChoice) -> Result<(SelectedBackend, String), String> {
    let cpu = SelectedBackend {
        name: "cpu",
        runtime: &CPU,
    };
    match choice {
        BackendChoice::Cpu => Ok((cpu, "cpu requested".into())),
        BackendChoice::Cuda => cuda_runtime()
            .map(|runtime| {
                (
                    SelectedBackend {
                        name: "cuda",
                        runtime,
                    },
                    "cuda requested".into(),
                )
            })
            .map_err(|reason| format!("--backend cuda, but CUDA is unusable: {reason}")),
        BackendChoice::Ort => ort_runtime()
            .map(|(runtime, source)| {
                (
                    SelectedBackend {
                        name: "ort",
                        runtime,
                    },
                    format!("ort requested: {source}"),
                )
            })
            .map_err(|reason| format!("--backend ort, but ONNX Runtime is unusable: {reason}")),
        BackendChoice::Auto => match cuda_runtime() {
            Ok(runtime) => Ok((
                SelectedBackend {
                    name: "cuda",
                    runtime,
                },
                "auto: CUDA runtime available".into(),
            )),
            Err(reason) => Ok((cpu, format!("auto: fell back to cpu because {reason}"))),
        },
    }
}

#[cfg(feature = "cuda")]
fn cuda_runtime() -> Result<&'static dyn Runtime, String> {
    use tract_onnx::tract_core::runtime::runtime_for_name;
    // tract-cuda registers its runtime from a static constructor and exports nothing else we
    // use; a crate none of whose symbols is referenced is left out by the linker, constructor
    // included ("the cuda runtime is not registered" on a real GPU, 2026-12-04). Calling one of
    // its functions here links it; the workspace builds it as one codegen unit (Cargo.toml), so
    // the constructor comes with that function's object.
    tract_cuda::utils::ensure_cuda_runtime_dependencies("CUDA libraries not usable")
        .map_err(|e| format!("{e:#}"))?;
    let runtime = runtime_for_name("cuda")
        .map_err(|e| format!("{e:#}"))?
        .ok_or_else(|| "the cuda runtime is not registered".to_string())?;
    runtime.check().map_err(|e| format!("{e:#}"))?;
    Ok(runtime)
}

#[cfg(not(feature = "cuda"))]
fn cuda_runtime() -> Result<&'static dyn Runtime, String> {
    Err("this build has no `cuda` feature".into())
}

#[cfg(feature = "ort")]
fn ort_runtime() -> Result<(&'static dyn Runtime, &'static str), String> {
    use crate::model::onnxruntime::{init, ORT_RUNTIME};
    init().map(|source| (&ORT_RUNTIME as &'static dyn Runtime, source))
}

#[cfg(not(feature = "ort"))]
fn ort_runtime() -> Result<(&'static dyn Runtime, &'static str), String> {
    Err("this build has no `ort` feature (rebuild with --features ort)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_used_when_requested() {
        let (backend, reason) = select_backend(BackendChoice::Cpu).unwrap();
        assert_eq!(backend.name, "cpu");
        assert_eq!(reason, "cpu requested");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn auto_falls_back_to_cpu_and_says_why_without_cuda() {
        let (backend, reason) = select_backend(BackendChoice::Auto).unwrap();
        assert_eq!(backend.name, "cpu");
        assert!(reason.contains("no `cuda` feature"), "{reason}");
        let err = select_backend(BackendChoice::Cuda).unwrap_err();
        assert!(err.contains("CUDA is unusable"), "{err}");
    }

    /// On a machine without a GPU the lookup fails its check (an error), but it must find the
    /// runtime: `Ok(None)` means tract-cuda was left out of the binary.
    #[cfg(feature = "cuda")]
    #[test]
    fn the_cuda_runtime_is_linked_in() {
        let _ = select_backend(BackendChoice::Cuda);
        let found = tract_onnx::tract_core::runtime::runtime_for_name("cuda");
        assert!(
            !matches!(found, Ok(None)),
            "tract-cuda's runtime is not registered"
        );
    }

    #[cfg(not(feature = "ort"))]
    #[test]
    fn ort_without_the_feature_says_how_to_get_it() {
        let err = select_backend(BackendChoice::Ort).unwrap_err();
        assert!(err.contains("no `ort` feature"), "{err}");
        assert!(err.contains("--features ort"), "{err}");
    }
}

//! Choosing the inference backend: tract's CUDA runtime when asked for and usable, else the CPU.

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
}

/// The backend in use and why.
#[derive(Debug, Clone, Copy)]
pub struct SelectedBackend {
    /// `cpu` or `cuda`.
    pub name: &'static str,
    /// The tract runtime.
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
}

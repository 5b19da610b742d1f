//! The install scripts in `deploy/`, run into a temporary root (DESTDIR): files, modes, unit
//! content, hardware detection from fixture trees, idempotency, uninstall; and
//! `systemd-analyze verify` on the shipped units.
//!
//! The tests crate cannot name the agent's binary (`CARGO_BIN_EXE_*` exists only in the
//! binary's own crate), so the installed "binary" is a small script that prints the real default
//! configuration (`AgentConfig::default_toml()`) for `generate-config`.

use slim_tests::repo_root as repo;
use std::{
    collections::BTreeMap,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// A new folder `slim-{tag}-XXXXXX` in the system's temporary folder, removed when dropped.
fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("slim-{tag}-"))
        .tempdir()
        .unwrap()
}

/// A stand-in binary whose `generate-config` prints `config`.
fn fake_binary(dir: &Path, name: &str, config: &str) -> PathBuf {
    let toml = dir.join(format!("{name}.default.toml"));
    std::fs::write(&toml, config).unwrap();
    let bin = dir.join(name);
    std::fs::write(
        &bin,
        format!(
            "#!/bin/sh\nif [ \"$1\" = generate-config ]; then cat '{}'; else echo \"{name} $*\"; fi\n",
            toml.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

fn install(script: &str, destdir: &Path, probe_root: &Path, args: &[&str]) -> Output {
    let out = Command::new("bash")
        .arg(repo().join("deploy").join(script))
        .args(args)
        .env("DESTDIR", destdir)
        .env("SLIM_PROBE_ROOT", probe_root)
        .env_remove("PREFIX")
        .env_remove("SLIM_INSTALL_NO_SYSTEMCTL")
        .output()
        .expect("bash runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{script} {args:?}:\n{text}");
    assert!(out.status.success(), "{script} failed:\n{text}");
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Every file under `root` with its mode and content.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    let mut files = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path);
            } else {
                let content = std::fs::read(&path).unwrap();
                files.insert(
                    path.strip_prefix(root).unwrap().to_path_buf(),
                    (meta.permissions().mode() & 0o7777, content),
                );
            }
        }
    }
    files
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn the_agent_installs_into_a_destdir_idempotently_and_uninstalls() {
    let tmp = temp_dir("install-agent");
    let dir = tmp.path();
    let dest = dir.join("root");
    let cpu_box = dir.join("cpu-box");
    std::fs::create_dir_all(&cpu_box).unwrap();
    let bin = fake_binary(dir, "slim-agent", &slim_agent::AgentConfig::default_toml());
    let bin = bin.to_str().unwrap();

    let first = stdout(&install(
        "install-agent.sh",
        &dest,
        &cpu_box,
        &["--binary", bin],
    ));
    assert!(first.contains("found: CPU only"), "{first}");
    assert!(
        first.contains("chose: cargo features [none], backend cpu"),
        "{first}"
    );
    assert!(
        first.contains("skipped: systemctl enable slim-agent.service"),
        "{first}"
    );

    let binary = dest.join("usr/local/bin/slim-agent");
    let unit = dest.join("etc/systemd/system/slim-agent.service");
    let config = dest.join("etc/slim/agent.toml");
    assert_eq!(mode(&binary), 0o755);
    assert_eq!(mode(&unit), 0o644);
    assert_eq!(
        mode(&config),
        0o640,
        "the config may hold the MQTT password"
    );
    assert_eq!(std::fs::read(&binary).unwrap(), std::fs::read(bin).unwrap());

    let unit_text = std::fs::read_to_string(&unit).unwrap();
    for line in [
        "User=slim",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "StateDirectory=slim-agent",
        "ReadOnlyPaths=/etc/slim",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "DeviceAllow=/dev/nvidiactl rw",
        "ExecStart=/usr/local/bin/slim-agent run",
        "WantedBy=multi-user.target",
    ] {
        assert!(
            unit_text.lines().any(|l| l.starts_with(line)),
            "unit lacks {line:?}:\n{unit_text}"
        );
    }

    // The installed config is the generated default with the service's paths, and it parses.
    let text = std::fs::read_to_string(&config).unwrap();
    let parsed =
        slim_agent::AgentConfig::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(
        parsed.state_dir.as_deref(),
        Some(Path::new("/var/lib/slim-agent"))
    );
    assert_eq!(
        parsed.models_dir,
        PathBuf::from("/usr/local/share/slim/models")
    );
    assert_eq!(parsed.backend, slim_agent::backend::BackendChoice::Cpu);
    let expected = slim_agent::AgentConfig {
        state_dir: parsed.state_dir.clone(),
        models_dir: parsed.models_dir.clone(),
        backend: parsed.backend,
        ..slim_agent::AgentConfig::default()
    };
    assert_eq!(parsed, expected, "nothing else differs from the default");

    // Second run: nothing changes, and it says so.
    let before = snapshot(&dest);
    let second = stdout(&install(
        "install-agent.sh",
        &dest,
        &cpu_box,
        &["--binary", bin],
    ));
    assert_eq!(snapshot(&dest), before, "a second run changed files");
    assert!(second.contains("nothing changed"), "{second}");
    assert!(
        second.contains("kept existing /etc/slim/agent.toml"),
        "{second}"
    );

    // An edited config survives a re-install.
    std::fs::write(&config, "id = \"edited\"\n").unwrap();
    install("install-agent.sh", &dest, &cpu_box, &["--binary", bin]);
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "id = \"edited\"\n"
    );

    // Uninstall keeps the config; --purge removes it.
    let out = stdout(&install(
        "install-agent.sh",
        &dest,
        &cpu_box,
        &["--uninstall"],
    ));
    assert!(!binary.exists() && !unit.exists(), "{out}");
    assert!(config.exists(), "uninstall keeps the configuration");
    install(
        "install-agent.sh",
        &dest,
        &cpu_box,
        &["--uninstall", "--purge"],
    );
    assert!(!config.exists());
    let left: Vec<_> = snapshot(&dest).into_keys().collect();
    assert!(left.is_empty(), "files left after --purge: {left:?}");
}

#[test]
fn the_installer_detects_jetson_desktop_gpu_and_cpu_and_names_the_features() {
    let tmp = temp_dir("install-detect");
    let dir = tmp.path();
    let detect = |root: &Path| {
        stdout(&install(
            "install-agent.sh",
            &dir.join("d"),
            root,
            &["--dry-detect"],
        ))
    };

    // JetPack 6 (L4T R36) with CUDA 12.6.
    let jp6 = dir.join("jp6");
    std::fs::create_dir_all(jp6.join("etc")).unwrap();
    std::fs::create_dir_all(jp6.join("usr/local/cuda")).unwrap();
    std::fs::write(
        jp6.join("etc/nv_tegra_release"),
        "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: Fri Sep 13 04:36:44 UTC 2024\n",
    )
    .unwrap();
    std::fs::write(
        jp6.join("usr/local/cuda/version.json"),
        "{\n   \"cuda\" : {\n      \"name\" : \"CUDA SDK\",\n      \"version\" : \"12.6.68\"\n   },\n   \"cuda_cudart\" : {\n      \"version\" : \"12.6.68\"\n   }\n}\n",
    )
    .unwrap();
    let out = detect(&jp6);
    assert!(
        out.contains("found: Jetson, L4T R36.4.0 (JetPack 6), CUDA 12.6"),
        "{out}"
    );
    assert!(
        out.contains("chose: cargo features [cuda-12060], backend auto"),
        "{out}"
    );

    // JetPack 5 (L4T R35, CUDA 11.4): no tract-cuda feature, so the CPU.
    let jp5 = dir.join("jp5");
    std::fs::create_dir_all(jp5.join("etc")).unwrap();
    std::fs::create_dir_all(jp5.join("usr/local/cuda")).unwrap();
    std::fs::write(
        jp5.join("etc/nv_tegra_release"),
        "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64\n",
    )
    .unwrap();
    std::fs::write(
        jp5.join("usr/local/cuda/version.json"),
        "{ \"cuda\" : { \"name\" : \"CUDA SDK\", \"version\" : \"11.4.19\" } }\n",
    )
    .unwrap();
    let out = detect(&jp5);
    assert!(out.contains("L4T R35.4.1 (JetPack 5), CUDA 11.4"), "{out}");
    assert!(
        out.contains("chose: cargo features [none], backend cpu (CUDA 11.4: tract-cuda 0.23 has no CUDA 11 feature"),
        "{out}"
    );

    // A desktop GPU with CUDA 13.
    let gpu = dir.join("gpu");
    std::fs::create_dir_all(gpu.join("proc/driver/nvidia")).unwrap();
    std::fs::create_dir_all(gpu.join("usr/local/cuda")).unwrap();
    std::fs::write(
        gpu.join("proc/driver/nvidia/version"),
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.65.06\n",
    )
    .unwrap();
    std::fs::write(
        gpu.join("usr/local/cuda/version.json"),
        "{ \"cuda\" : { \"name\" : \"CUDA SDK\", \"version\" : \"13.0.48\" } }\n",
    )
    .unwrap();
    let out = detect(&gpu);
    assert!(
        out.contains("found: desktop NVIDIA GPU, CUDA 13.0"),
        "{out}"
    );
    assert!(out.contains("chose: cargo features [cuda-13000]"), "{out}");

    // Nothing: CPU only.
    let cpu = dir.join("cpu");
    std::fs::create_dir_all(&cpu).unwrap();
    let out = detect(&cpu);
    assert!(out.contains("found: CPU only"), "{out}");
}

#[test]
fn the_coordinator_installs_and_uninstalls() {
    let tmp = temp_dir("install-coordinator");
    let dir = tmp.path();
    let dest = dir.join("root");
    let bin = fake_binary(dir, "slim-coordinator", "id = \"coordinator\"\n");
    let out = stdout(&install(
        "install-coordinator.sh",
        &dest,
        dir,
        &["--binary", bin.to_str().unwrap()],
    ));
    assert!(out.contains("the coordinator needs no GPU"), "{out}");
    let unit =
        std::fs::read_to_string(dest.join("etc/systemd/system/slim-coordinator.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/slim-coordinator\n"),
        "{unit}"
    );
    assert!(
        unit.contains("User=slim\n") && unit.contains("PrivateDevices=yes\n"),
        "{unit}"
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("etc/slim/coordinator.toml")).unwrap(),
        "id = \"coordinator\"\n"
    );
    let before = snapshot(&dest);
    let again = stdout(&install(
        "install-coordinator.sh",
        &dest,
        dir,
        &["--binary", bin.to_str().unwrap()],
    ));
    assert!(again.contains("nothing changed"), "{again}");
    assert_eq!(snapshot(&dest), before);
    install(
        "install-coordinator.sh",
        &dest,
        dir,
        &["--uninstall", "--purge"],
    );
    assert!(snapshot(&dest).is_empty());
}

/// Whether a test may skip because `tool` is missing: only when SLIM_SKIP_MISSING_TOOLS=1 says
/// so (and the output says what was not checked); otherwise a missing tool fails the test, so
/// it never passes without having checked anything.
fn tool_or_skip(tool: &str, install_hint: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return true;
    }
    let skip = std::env::var("SLIM_SKIP_MISSING_TOOLS").is_ok_and(|v| v == "1");
    assert!(
        skip,
        "{tool} is not installed ({install_hint}); this test cannot check anything without it. \
         Set SLIM_SKIP_MISSING_TOOLS=1 to skip it knowingly."
    );
    eprintln!("SKIPPED (SLIM_SKIP_MISSING_TOOLS=1): {tool} is not installed; nothing was checked");
    false
}

#[test]
fn systemd_analyze_verify_accepts_the_units() {
    if !tool_or_skip("systemd-analyze", "Debian: apt-get install systemd") {
        return;
    }
    let version = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .unwrap();
    eprintln!(
        "{}",
        String::from_utf8_lossy(&version.stdout)
            .lines()
            .next()
            .unwrap_or("")
    );
    let tmp = temp_dir("verify-units");
    let dir = tmp.path();
    // verify checks that ExecStart= is executable: point it at stand-ins in the temp dir.
    let verify = |name: &str, text: &str| -> String {
        for bin in ["slim-agent", "slim-coordinator"] {
            fake_binary(dir, bin, "");
        }
        let path = dir.join(name);
        std::fs::write(
            &path,
            text.replace("/usr/local/bin/", &format!("{}/", dir.display())),
        )
        .unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "systemd-analyze verify {name}: {text}"
        );
        text
    };
    for unit in ["slim-agent.service", "slim-coordinator.service"] {
        let text = std::fs::read_to_string(repo().join("deploy/systemd").join(unit)).unwrap();
        let complaints = verify(unit, &text);
        assert!(
            complaints.trim().is_empty(),
            "systemd-analyze verify {unit} complained:\n{complaints}"
        );
    }
    // The check has teeth: a misspelled key is reported.
    let text = std::fs::read_to_string(repo().join("deploy/systemd/slim-agent.service"))
        .unwrap()
        .replace("ProtectHome=yes", "ProtectHom=yes");
    let complaints = verify("broken.service", &text);
    assert!(complaints.contains("ProtectHom"), "{complaints}");
}

#[test]
fn prefix_moves_the_binary_the_unit_paths_and_the_models() {
    let tmp = temp_dir("install-prefix");
    let dir = tmp.path();
    let dest = dir.join("root");
    let models = dir.join("models/digits");
    std::fs::create_dir_all(&models).unwrap();
    std::fs::write(models.join("manifest.toml"), "name = \"digits\"\n").unwrap();
    let bin = fake_binary(dir, "slim-agent", &slim_agent::AgentConfig::default_toml());
    let out = Command::new("bash")
        .arg(repo().join("deploy/install-agent.sh"))
        .args(["--binary", bin.to_str().unwrap(), "--models"])
        .arg(dir.join("models"))
        .env("DESTDIR", &dest)
        .env("PREFIX", "/usr")
        .env("SLIM_PROBE_ROOT", dir)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(dest.join("usr/bin/slim-agent").exists(), "{text}");
    assert!(
        dest.join("usr/share/slim/models/digits/manifest.toml")
            .exists(),
        "{text}"
    );
    let unit = std::fs::read_to_string(dest.join("etc/systemd/system/slim-agent.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/bin/slim-agent run\n"),
        "{unit}"
    );
    assert!(!unit.contains("/usr/local"), "{unit}");
    let config = slim_agent::AgentConfig::from_toml(
        &std::fs::read_to_string(dest.join("etc/slim/agent.toml")).unwrap(),
    )
    .unwrap();
    assert_eq!(config.models_dir, PathBuf::from("/usr/share/slim/models"));
}

/// Runs an install script expecting failure; returns its stderr.
fn install_fails(script: &str, env: &[(&str, &Path)], args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("deploy").join(script))
        .args(args)
        .env_remove("DESTDIR")
        .env_remove("PREFIX")
        .env_remove("SLIM_INSTALL_NO_SYSTEMCTL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("bash runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    eprintln!("{script} {args:?}: {:?}\n{stdout}{stderr}", out.status);
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

#[test]
fn options_are_checked_and_help_is_usage_text() {
    let tmp = temp_dir("install-options");
    let dir = tmp.path();
    let (code, stdout, _) = install_fails("install-agent.sh", &[], &["--help"]);
    assert_eq!(code, 0);
    assert!(
        stdout.starts_with("Usage: install.sh agent|coordinator"),
        "{stdout}"
    );
    for option in [
        "--binary PATH",
        "--models DIR",
        "--purge",
        "DESTDIR",
        "PREFIX",
    ] {
        assert!(stdout.contains(option), "--help lacks {option}:\n{stdout}");
    }
    assert!(
        !stdout.contains("set -e") && !stdout.lines().any(|l| l.starts_with('#')),
        "--help prints the script's source:\n{stdout}"
    );

    // An option without its value is named, not "$2: unbound variable".
    for option in ["--binary", "--models", "--features"] {
        let (code, _, stderr) = install_fails(
            "install-agent.sh",
            &[("DESTDIR", &dir.join("root")), ("SLIM_PROBE_ROOT", dir)],
            &[option],
        );
        assert_eq!(code, 2, "{stderr}");
        assert!(
            stderr.contains(&format!("{option} needs a value")),
            "{stderr}"
        );
        assert!(!stderr.contains("unbound variable"), "{stderr}");
    }
    let (code, _, stderr) = install_fails(
        "install-agent.sh",
        &[("DESTDIR", &dir.join("root")), ("SLIM_PROBE_ROOT", dir)],
        &["--binary", "--models", "models"],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--binary needs a value"), "{stderr}");
    let (code, _, stderr) = install_fails("install-agent.sh", &[], &["--bogus"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("unknown option --bogus"), "{stderr}");
}

#[test]
fn destdir_without_a_binary_builds_nothing() {
    let tmp = temp_dir("install-nobuild");
    let dir = tmp.path();
    // A cargo that records being run, first on PATH.
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let marker = dir.join("cargo-ran");
    let cargo = bin.join("cargo");
    std::fs::write(
        &cargo,
        format!("#!/bin/sh\necho \"$@\" >> '{}'\nexit 1\n", marker.display()),
    )
    .unwrap();
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let dest = dir.join("root");
    let out = Command::new("bash")
        .arg(repo().join("deploy/install-agent.sh"))
        .env("DESTDIR", &dest)
        .env("SLIM_PROBE_ROOT", dir)
        .env("PATH", &path)
        .env_remove("PREFIX")
        .env_remove("SLIM_INSTALL_NO_SYSTEMCTL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("DESTDIR") && stderr.contains("--binary"),
        "{stderr}"
    );
    // The fake cargo is reachable, so a build would have left the marker.
    assert!(
        Command::new("bash")
            .args(["-c", "command -v cargo"])
            .env("PATH", &path)
            .output()
            .unwrap()
            .stdout
            .starts_with(bin.to_string_lossy().as_bytes()),
        "the stand-in cargo is not first on PATH"
    );
    assert!(
        !marker.exists(),
        "cargo ran: {:?}",
        std::fs::read_to_string(&marker)
    );
    assert!(!dest.join("usr/local/bin/slim-agent").exists());
}

#[test]
fn models_copies_only_the_families_and_purge_removes_them() {
    let tmp = temp_dir("install-models");
    let dir = tmp.path();
    let dest = dir.join("root");
    let models = dir.join("models");
    for (path, text) in [
        ("digits/manifest.toml", "family = \"digits\"\n"),
        ("digits/digits_w1.0.onnx", "weights"),
        ("digits/sub/extra.npy", "npy"),
        ("pipeline/build.py", "print()"),
        (".venv/lib/huge.so", "not a model"),
        ("README.md", "# models"),
        ("notes/todo.txt", "no manifest here"),
    ] {
        let file = models.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
    }
    let bin = fake_binary(dir, "slim-agent", &slim_agent::AgentConfig::default_toml());
    let args = [
        "--binary",
        bin.to_str().unwrap(),
        "--models",
        models.to_str().unwrap(),
    ];
    let first = stdout(&install("install-agent.sh", &dest, dir, &args));
    let shared = dest.join("usr/local/share/slim/models");
    let installed: Vec<PathBuf> = snapshot(&shared).into_keys().collect();
    assert_eq!(
        installed,
        [
            "digits/digits_w1.0.onnx",
            "digits/manifest.toml",
            "digits/sub/extra.npy"
        ]
        .map(PathBuf::from),
        "{first}"
    );
    assert!(
        first.contains("installed /usr/local/share/slim/models/digits (3 of 3 files)"),
        "{first}"
    );
    let again = stdout(&install("install-agent.sh", &dest, dir, &args));
    assert!(
        again.contains("unchanged /usr/local/share/slim/models/digits")
            && again.contains("nothing changed"),
        "{again}"
    );
    // A changed model file is installed again.
    std::fs::write(models.join("digits/digits_w1.0.onnx"), "new weights").unwrap();
    let third = stdout(&install("install-agent.sh", &dest, dir, &args));
    assert!(third.contains("(1 of 3 files)"), "{third}");

    // The generated config names the secured-broker keys it tells the operator to edit, and
    // they are real keys: uncommented, the file still parses and sets them.
    let config = dest.join("etc/slim/agent.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        first.contains("uncomment username, password and ca_file"),
        "{first}"
    );
    let edited = text
        .replace("# username = \"\"", "username = \"agent-7\"")
        .replace("# password = \"\"", "password = \"secret\"")
        .replace("# ca_file = ", "ca_file = ");
    assert_ne!(edited, text, "no commented broker keys in:\n{text}");
    let parsed =
        slim_agent::AgentConfig::from_toml(&edited).unwrap_or_else(|e| panic!("{e}\n{edited}"));
    assert_eq!(parsed.broker.username.as_deref(), Some("agent-7"));
    assert_eq!(parsed.broker.password.as_deref(), Some("secret"));
    assert_eq!(
        parsed.broker.ca_file.as_deref(),
        Some(Path::new("/etc/slim/ca.crt"))
    );

    // Uninstall keeps the models; --purge removes them with everything else.
    let kept = stdout(&install("install-agent.sh", &dest, dir, &["--uninstall"]));
    assert!(shared.join("digits/manifest.toml").exists(), "{kept}");
    assert!(kept.contains("/usr/local/share/slim/models"), "{kept}");
    install("install-agent.sh", &dest, dir, &["--uninstall", "--purge"]);
    let left: Vec<_> = snapshot(&dest).into_keys().collect();
    assert!(left.is_empty(), "files left after --purge: {left:?}");

    // A folder without any family is refused.
    let (code, _, stderr) = install_fails(
        "install-agent.sh",
        &[("DESTDIR", &dest), ("SLIM_PROBE_ROOT", dir)],
        &[
            "--binary",
            bin.to_str().unwrap(),
            "--models",
            models.join("pipeline").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("holds no model family"), "{stderr}");
}

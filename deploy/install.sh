#!/usr/bin/env bash
# Installs (or uninstalls) a Slim Scheduler agent or coordinator as a systemd service.
# Use the wrappers: deploy/install-agent.sh and deploy/install-coordinator.sh (see usage below).
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: install.sh agent|coordinator [options]
       (deploy/install-agent.sh and deploy/install-coordinator.sh fill in the role)

Installs slim-agent or slim-coordinator as a hardened systemd service: the binary, the unit,
/etc/slim/<role>.toml (generated once, never overwritten) and, for the agent, the model families.

Options:
  --binary PATH     install this binary; without it, build one from this checkout with cargo,
                    choosing the cargo features from the detected hardware (Jetson, desktop
                    NVIDIA GPU, CPU only). Required with DESTDIR.
  --features LIST   cargo features for that build (default: chosen from the hardware)
  --models DIR      copy the model families in DIR (each sub-folder with a manifest.toml; nothing
                    else) to $PREFIX/share/slim/models
  --uninstall       remove the binary and the unit; keep the configuration, the state and the
                    models
  --purge           with --uninstall: also remove the configuration, the state directory, the
                    installed models, and the `slim` user if no service uses it
  --dry-detect      print the detected hardware and the chosen features, change nothing
  -h, --help        this text

Environment:
  DESTDIR                    stage everything under this root (implies no systemctl, no
                             useradd; needs --binary: nothing is built)
  PREFIX                     where binaries and shared files go (default /usr/local)
  SLIM_INSTALL_NO_SYSTEMCTL  1: do not run systemctl, useradd or chown (set by DESTDIR)
  SLIM_PROBE_ROOT            root the hardware detection reads (default /; for tests)

Idempotent: a second run changes nothing and says so.
USAGE
}

for arg in "$@"; do
  case "$arg" in -h | --help) usage; exit 0 ;; esac
done

role=${1:-}
case "$role" in
  agent | coordinator) shift ;;
  *) echo "usage: $0 agent|coordinator [options] (--help lists them)" >&2; exit 2 ;;
esac

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
name=slim-$role
binary=""
features=""
models=""
uninstall=0
purge=0
detect_only=0
# The value of option $1, which must be present and not look like another option.
value() {
  if [ $# -lt 2 ] || [ -z "$2" ] || [ "${2#--}" != "$2" ]; then
    echo "$name: $1 needs a value (--help lists the options)" >&2
    exit 2
  fi
  printf '%s' "$2"
}
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$(value "$@"); shift 2 ;;
    --features) features=$(value "$@"); shift 2 ;;
    --models) models=$(value "$@"); shift 2 ;;
    --uninstall) uninstall=1; shift ;;
    --purge) purge=1; shift ;;
    --dry-detect) detect_only=1; shift ;;
    *) echo "$name: unknown option $1 (--help lists the options)" >&2; exit 2 ;;
  esac
done
if [ "$purge" = 1 ] && [ "$uninstall" = 0 ]; then
  echo "$name: --purge goes with --uninstall" >&2
  exit 2
fi

DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr/local}
probe=${SLIM_PROBE_ROOT:-/}
probe=${probe%/}
no_systemctl=${SLIM_INSTALL_NO_SYSTEMCTL:-}
if [ -n "$DESTDIR" ] && [ -z "$no_systemctl" ]; then no_systemctl=1; fi
[ "$no_systemctl" = 0 ] && no_systemctl=""

bindir="$PREFIX/bin"
sharedir="$PREFIX/share/slim"
confdir=/etc/slim
unitdir=/etc/systemd/system
statedir=/var/lib/$name
config="$confdir/$role.toml"
unit="$name.service"

say() { printf '%s: %s\n' "$name" "$*"; }
changed=0

# --- hardware detection -------------------------------------------------------------------
hardware=cpu
cuda_version=""
detail=""
cuda_from_json_multiline() {
  tr -d '\n' < "$1" 2>/dev/null | sed -n 's/.*"cuda"[^}]*"version"[[:space:]]*:[[:space:]]*"\([0-9]*\.[0-9]*\).*/\1/p' | head -1
}
detect() {
  if [ -r "$probe/etc/nv_tegra_release" ]; then
    hardware=jetson
    local line release revision
    line=$(head -1 "$probe/etc/nv_tegra_release")
    release=$(printf '%s' "$line" | sed -n 's/.*R\([0-9][0-9]*\) (release).*/\1/p')
    revision=$(printf '%s' "$line" | sed -n 's/.*REVISION: \([0-9.]*\).*/\1/p')
    local jetpack="?"
    case "$release" in 32) jetpack=4 ;; 34 | 35) jetpack=5 ;; 36) jetpack=6 ;; 38) jetpack=7 ;; esac
    detail="Jetson, L4T R${release:-?}.${revision:-?} (JetPack $jetpack)"
    [ -r "$probe/proc/device-tree/model" ] && detail="$detail, $(tr -d '\0' < "$probe/proc/device-tree/model")"
  elif [ -e "$probe/proc/driver/nvidia/version" ] || { [ "$probe" = "" ] && command -v nvidia-smi >/dev/null 2>&1; } ||
    compgen -G "$probe/usr/lib/*/libnvidia-ml.so*" >/dev/null || compgen -G "$probe/usr/lib64/libnvidia-ml.so*" >/dev/null; then
    hardware=gpu
    detail="desktop NVIDIA GPU"
    if [ "$probe" = "" ] && command -v nvidia-smi >/dev/null 2>&1; then
      local gpu driver_cuda
      gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1 || true)
      driver_cuda=$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: \([0-9]*\.[0-9]*\).*/\1/p' | head -1 || true)
      [ -n "$gpu" ] && detail="$detail ($gpu)"
      [ -n "$driver_cuda" ] && detail="$detail, driver supports CUDA up to $driver_cuda"
    fi
  else
    detail="CPU only (no /etc/nv_tegra_release, no NVIDIA driver or libnvidia-ml)"
  fi
  if [ "$hardware" != cpu ]; then
    if [ -r "$probe/usr/local/cuda/version.json" ]; then
      cuda_version=$(cuda_from_json_multiline "$probe/usr/local/cuda/version.json")
    fi
    if [ -z "$cuda_version" ] && [ -x "$probe/usr/local/cuda/bin/nvcc" ]; then
      cuda_version=$("$probe/usr/local/cuda/bin/nvcc" --version | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p')
    fi
    if [ -z "$cuda_version" ] && [ "$probe" = "" ] && command -v nvcc >/dev/null 2>&1; then
      cuda_version=$(nvcc --version | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p')
    fi
  fi
}
choose_features() {
  # tract-cuda 0.23 has CUDA 12.x and 13.x features only; the agent crate exposes cuda-12020,
  # cuda-12060 and cuda-13000. CUDA 11 (JetPack 5) therefore runs on the CPU.
  backend=cpu
  reason=""
  if [ -n "$features" ]; then
    reason="--features given"
    case "$features" in *cuda*) backend=auto ;; esac
    return
  fi
  if [ "$role" = coordinator ]; then
    features=""; reason="the coordinator needs no GPU"; return
  fi
  case "$hardware:${cuda_version%%.*}" in
    cpu:*) features=""; reason="no NVIDIA GPU" ;;
    *:) features=""; reason="no CUDA toolkit/runtime found (/usr/local/cuda/version.json, nvcc): install CUDA, then re-run, or stay on the CPU" ;;
    *:11 | *:10) features=""; reason="CUDA $cuda_version: tract-cuda 0.23 has no CUDA 11 feature, so this device runs on the CPU" ;;
    *:12)
      backend=auto; reason="CUDA $cuda_version"
      if [ "${cuda_version#*.}" -lt 6 ] 2>/dev/null; then features="cuda-12020"; else features="cuda-12060"; fi ;;
    *:13) features="cuda-13000"; backend=auto; reason="CUDA $cuda_version" ;;
    *) features=""; reason="CUDA $cuda_version is not one tract-cuda 0.23 supports" ;;
  esac
}

detect
choose_features
say "found: $detail${cuda_version:+, CUDA $cuda_version}"
say "chose: cargo features [${features:-none}], backend $backend ($reason)"
[ "$detect_only" = 1 ] && exit 0

# --- helpers --------------------------------------------------------------------------------
put() { # mode source dest: installs if different, says what happened
  local mode=$1 src=$2 dest=$DESTDIR$3
  if [ -e "$dest" ] && cmp -s "$src" "$dest" && [ "$(stat -c %a "$dest")" = "${mode#0}" ]; then
    say "unchanged $3"
  else
    install -D -m "$mode" "$src" "$dest"
    say "installed $3"
    changed=1
  fi
}
systemctl_() {
  if [ -n "$no_systemctl" ]; then
    say "skipped: systemctl $* (DESTDIR or SLIM_INSTALL_NO_SYSTEMCTL)"
  elif command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl "$@"
  else
    say "skipped: systemctl $* (systemd is not running here)"
  fi
}

# --- uninstall ------------------------------------------------------------------------------
if [ "$uninstall" = 1 ]; then
  if [ -e "$DESTDIR$unitdir/$unit" ]; then
    systemctl_ disable --now "$unit" || true
  fi
  for f in "$bindir/$name" "$unitdir/$unit"; do
    if [ -e "$DESTDIR$f" ]; then rm -f "$DESTDIR$f"; say "removed $f"; fi
  done
  systemctl_ daemon-reload || true
  if [ "$purge" = 1 ]; then
    purged=("$config" "$statedir")
    # Only the agent installs models (--models).
    [ "$role" = agent ] && purged+=("$sharedir/models")
    for f in "${purged[@]}"; do
      if [ -e "$DESTDIR$f" ]; then rm -rf "${DESTDIR:?}$f"; say "removed $f"; fi
    done
    for d in "$confdir" "$sharedir"; do rmdir "$DESTDIR$d" 2>/dev/null || true; done
    if [ -z "$no_systemctl" ] && id slim >/dev/null 2>&1 &&
      [ ! -e /etc/systemd/system/slim-agent.service ] && [ ! -e /etc/systemd/system/slim-coordinator.service ]; then
      userdel slim && say "removed user slim"
    fi
  else
    kept="$config and $statedir"
    [ "$role" = agent ] && [ -e "$DESTDIR$sharedir/models" ] && kept="$config, $statedir and $sharedir/models"
    say "kept $kept (--purge removes them)"
  fi
  exit 0
fi

# --- binary ---------------------------------------------------------------------------------
if [ -z "$binary" ] && [ -n "$DESTDIR" ]; then
  echo "$name: DESTDIR stages files and builds nothing: pass --binary PATH (e.g. cargo build --release -p $name${features:+ --features $features}, then --binary target/release/$name)" >&2
  exit 2
fi
if [ -z "$binary" ]; then
  command -v cargo >/dev/null || { echo "$name: no --binary and no cargo: build it elsewhere (docs/deploy.md) and pass --binary" >&2; exit 1; }
  args=(build --release --locked -p "$name")
  [ -n "$features" ] && args+=(--features "$features")
  say "building: cargo ${args[*]}"
  (cd "$repo" && cargo "${args[@]}")
  binary="$repo/target/release/$name"
fi
[ -x "$binary" ] || { echo "$name: $binary is not an executable" >&2; exit 1; }

# --- user -----------------------------------------------------------------------------------
if [ -n "$no_systemctl" ]; then
  say "skipped: system user slim (DESTDIR or SLIM_INSTALL_NO_SYSTEMCTL)"
elif id slim >/dev/null 2>&1; then
  say "unchanged user slim"
else
  useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin slim
  say "created system user slim"
  changed=1
fi
if [ -z "$no_systemctl" ] && [ "$role" = agent ]; then
  for g in video render; do
    if getent group "$g" >/dev/null && ! id -nG slim | tr ' ' '\n' | grep -qx "$g"; then
      usermod -aG "$g" slim && say "added slim to group $g (GPU device access)"
      changed=1
    fi
  done
fi

# --- files ----------------------------------------------------------------------------------
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
put 0755 "$binary" "$bindir/$name"

sed -e "s|/usr/local|$PREFIX|g" "$here/systemd/$unit" > "$tmp/$unit"
put 0644 "$tmp/$unit" "$unitdir/$unit"

if [ -n "$models" ]; then
  [ -d "$models" ] || { echo "$name: --models $models is not a folder" >&2; exit 1; }
  # Only model families (sub-folders with a manifest.toml): not the build pipeline, its Python
  # virtual environment or anything else that lives next to them.
  families=()
  for manifest in "$models"/*/manifest.toml; do
    [ -f "$manifest" ] && families+=("$(dirname "$manifest")")
  done
  [ ${#families[@]} -gt 0 ] || { echo "$name: --models $models holds no model family (no */manifest.toml)" >&2; exit 1; }
  for family in "${families[@]}"; do
    fname=$(basename "$family")
    updated=0 total=0
    while IFS= read -r -d '' file; do
      rel=${file#"$family"/}
      dest="$DESTDIR$sharedir/models/$fname/$rel"
      total=$((total + 1))
      if ! { [ -e "$dest" ] && cmp -s "$file" "$dest"; }; then
        install -D -m 0644 "$file" "$dest"
        updated=$((updated + 1))
      fi
    done < <(find "$family" -type f -print0)
    if [ "$updated" = 0 ]; then
      say "unchanged $sharedir/models/$fname ($total files)"
    else
      say "installed $sharedir/models/$fname ($updated of $total files)"
      changed=1
    fi
  done
fi

if [ -e "$DESTDIR$config" ]; then
  say "kept existing $config"
else
  "$binary" generate-config > "$tmp/generated.toml"
  if [ "$role" = agent ]; then
    # Top-level keys must come before the first [table].
    awk -v models="$sharedir/models" -v state="$statedir" -v backend="$backend" '
      /^models_dir = / { print "models_dir = \"" models "\""; next }
      /^backend = / { print "backend = \"" backend "\""; next }
      /^state_dir = / { next }
      /^\[/ && !done { print "# The sled outbox and accepted requests (systemd StateDirectory)."; print "state_dir = \"" state "\""; print ""; done = 1 }
      { print }
      END { if (!done) print "state_dir = \"" state "\"" }
    ' "$tmp/generated.toml" > "$tmp/$role.toml"
  else
    cp "$tmp/generated.toml" "$tmp/$role.toml"
  fi
  # The secured-broker keys, commented out, in the [broker] table (docs/deploy.md, section 2).
  awk '
    { print }
    /^\[broker\]$/ {
      print "# For a secured broker (mqtts://, password file, ACL), uncomment and fill in:"
      print "# username = \"\""
      print "# password = \"\""
      print "# ca_file = \"/etc/slim/ca.crt\""
    }
  ' "$tmp/$role.toml" > "$tmp/$role.toml.new"
  mv "$tmp/$role.toml.new" "$tmp/$role.toml"
  install -D -m 0640 "$tmp/$role.toml" "$DESTDIR$config"
  [ -z "$no_systemctl" ] && chgrp slim "$DESTDIR$config"
  say "wrote $config (set url under [broker]; for a secured broker, uncomment username, password and ca_file there)"
  changed=1
fi
chmod 0755 "$DESTDIR$confdir"

# --- systemd --------------------------------------------------------------------------------
systemctl_ daemon-reload
systemctl_ enable "$unit"
if [ "$changed" = 0 ]; then
  say "nothing changed"
else
  if [ "$role" = agent ]; then
    say "done: edit $config, check it with 'sudo -u slim $bindir/$name doctor -c $config', then 'systemctl start $unit'"
  else
    say "done: edit $config, then 'systemctl start $unit'"
  fi
fi

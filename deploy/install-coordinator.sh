#!/usr/bin/env bash
# Installs the Slim Scheduler coordinator as a hardened systemd service; `--help` lists the
# options (--binary, --features, --uninstall, --purge) and DESTDIR/PREFIX.
exec "$(dirname "$0")/install.sh" coordinator "$@"

#!/usr/bin/env bash
# Installs the Slim Scheduler agent as a hardened systemd service; `--help` lists the options
# (--binary, --features, --models, --uninstall, --purge) and DESTDIR/PREFIX.
exec "$(dirname "$0")/install.sh" agent "$@"

#!/usr/bin/env bash
# Installs the Slim Scheduler coordinator as a hardened systemd service; see deploy/install.sh for the
# options (--binary, --features, --models, --uninstall, --purge) and DESTDIR/PREFIX.
exec "$(dirname "$0")/install.sh" coordinator "$@"

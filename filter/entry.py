"""The ``ployfilter`` command's entry point, kept light.

A reload sent right after a start (``systemctl reload`` in a provisioning
script) would otherwise reach the daemon while it imports, before any
handler is in place, and SIGHUP's default is to end the process; systemd
takes that for a clean stop and does not restart it. So SIGHUP is ignored
for ``run`` before anything heavy loads; the daemon installs its own
handler later.
"""

from __future__ import annotations

import signal
import sys


def main() -> int:
    command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
    if command == "run":
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from filter.cli import main as cli_main

    return cli_main()

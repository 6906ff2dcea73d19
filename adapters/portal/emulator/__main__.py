"""`python -m adapters.portal.emulator ARGS...`, the same as `healthbook-gateway portal-emulator ARGS...`."""
import sys

from adapters.portal.emulator.cli import main

raise SystemExit(main(sys.argv[1:]))

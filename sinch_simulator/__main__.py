"""``python -m sinch_simulator``: see :mod:`sinch_simulator.cli`."""

import sys

from sinch_simulator.cli import main

sys.exit(main())

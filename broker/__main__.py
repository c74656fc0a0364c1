"""``python -m broker`` runs the switchboard command line."""

import sys

from broker.cli import main

sys.exit(main())

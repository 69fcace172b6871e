"""`python -m belabox_metrics` runs the collector CLI."""

import sys

from belabox_metrics.cli.collector import main

sys.exit(main())

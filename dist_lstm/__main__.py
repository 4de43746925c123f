"""`python -m dist_lstm ...` is `dist-lstm ...`."""

import sys

from dist_lstm.cli import main

sys.exit(main())

"""``python -m shared.cli`` is the ``chouette`` console script."""

import sys

from shared.cli import main

sys.exit(main())

"""``python -m chouette`` is the ``chouette`` console script."""

import sys

from chouette.app import main

sys.exit(main())

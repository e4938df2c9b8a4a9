"""``python -m chouette`` is the ``chouette`` console script."""

import sys

from chouette.entry import main

sys.exit(main())

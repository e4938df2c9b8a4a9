"""``python -m chouette`` is the ``chouette`` console script."""

import sys

from chouette import main

sys.exit(main())

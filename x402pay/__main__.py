"""``python -m x402pay``: the same as the ``x402pay`` command."""

import sys

from x402pay.cli import main

sys.exit(main())

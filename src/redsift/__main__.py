"""``python -m redsift``: the same as the ``redsift`` command."""

import sys

from .cli.main import main

sys.exit(main())

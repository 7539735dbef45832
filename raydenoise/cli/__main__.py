"""``python -m raydenoise.cli``: the same as the ``raydenoise`` command."""

import sys

from .main import main

sys.exit(main())

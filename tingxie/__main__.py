"""`python -m tingxie`: the same as the `tingxie` command."""

import sys

from .cli import main

sys.exit(main())

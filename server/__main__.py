"""`python -m server`: the same as `tingxie serve`.

OpenMP threads that spin while waiting fight with other processes on a shared machine;
passive waiting is set here before torch loads (export OMP_WAIT_POLICY to override).
"""

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .cli import main

sys.exit(main())

"""python -m tools.build: the demo-model build (see main.py)."""

import sys

from .main import main

sys.exit(main())

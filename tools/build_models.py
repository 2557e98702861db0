#!/usr/bin/env python3
"""Build the demo model folders under models/ (the build itself lives in tools/build/).

    python tools/build_models.py --models-dir models [--only NAME ...] [--force]
"""

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # tools.build and predictors, also when not pip-installed
    sys.path.insert(0, str(REPO_ROOT))

from tools.build.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

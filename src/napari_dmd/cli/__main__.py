"""``python -m napari_dmd.cli VERB ...``: the same as ``napari-dmd VERB ...``."""

import sys

from .main import main

if __name__ == "__main__":
    sys.exit(main())

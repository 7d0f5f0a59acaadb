"""``python -m napari_dmd.bench VERB ...``: the same as ``napari-dmd bench VERB ...`` (also runs B5's children).

``bench memory`` starts ``python -m napari_dmd.bench --memory-child SPEC`` for each configuration; ``main`` in
``__init__`` handles both that and the verbs.
"""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())

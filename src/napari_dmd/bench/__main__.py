"""``python -m napari_dmd.bench VERB ...``: the same as ``napari-dmd bench VERB ...``.

``bench memory`` also starts ``python -m napari_dmd.bench --memory-child SPEC`` for each configuration, so that
peak memory belongs to that configuration alone.
"""

import json
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run one benchmark verb (or a memory child) and return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--memory-child"]:
        from .memory import _memory_child

        print(json.dumps(_memory_child(json.loads(argv[1]))))
        return 0
    from napari_dmd.cli import main as cli_main

    return cli_main(["bench", *argv])


if __name__ == "__main__":
    sys.exit(main())

"""Make docs/images/screen_1366x768.png: napari with the tabbed "napari DMD" dock on a 1366 x 768 screen.

Run (no display needed)::

    QT_QPA_PLATFORM=xcb LIBGL_ALWAYS_SOFTWARE=1 xvfb-run -a -s "-screen 0 1600x1000x24" \\
        python docs/make_screenshot_fit.py [--tab Distill] [--out docs/images/screen_1366x768.png]

Opens both phantom samples, opens the dock, resizes the main window to 1366 x 768, shows the chosen tab and
saves a grab of the whole window. Prints the window's frame size, which must fit the screen.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

SCREEN = (1366, 768)


def main(argv: list[str] | None = None) -> int:
    """Make the screenshot; returns 0 when the window fits the screen, else 1."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tab", default="Distill", help="tab to show (Teacher, Distill, Features, Compare, Segment)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "images" / "screen_1366x768.png"))
    args = parser.parse_args(argv)

    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    viewer.open_sample("napari-dmd", "phantom-2d")
    viewer.open_sample("napari-dmd", "phantom-3d")
    _, panel = viewer.window.add_plugin_dock_widget("napari-dmd", "napari DMD")
    window = viewer.window._qt_window
    window.resize(*SCREEN)
    panel.show_tab(args.tab)
    for _ in range(30):
        QApplication.processEvents()
        time.sleep(0.03)
    frame = window.frameGeometry()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    window.grab().save(str(out))
    fits = frame.width() <= SCREEN[0] and frame.height() <= SCREEN[1]
    print(f"{out}: main window {frame.width()} x {frame.height()} ({'fits' if fits else 'does NOT fit'} "
          f"{SCREEN[0]} x {SCREEN[1]})")
    viewer.close()
    return 0 if fits else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Package data: the plugin icon (icon.png, referenced from napari.yaml as napari_dmd.resources:icon.png)."""

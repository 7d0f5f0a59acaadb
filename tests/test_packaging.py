"""What a stranger gets from the package: metadata, one version, the napari manifest, a complete sdist and wheel."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from importlib import metadata, resources
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import napari_dmd

REPO = Path(__file__).resolve().parents[1]
URL = "https://github.com/napari-dmd/napari-dmd"


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def test_one_version_source(capsys: pytest.CaptureFixture[str]) -> None:
    project = _pyproject()["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert _pyproject()["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "napari_dmd.__version__"}
    assert metadata.version("napari-dmd") == napari_dmd.__version__
    from napari_dmd.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"napari-dmd {napari_dmd.__version__}"


def test_metadata_license_urls_classifiers() -> None:
    project = _pyproject()["project"]
    assert project["license"] == "BSD-3-Clause" and project["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("BSD 3-Clause License") and "napari-dmd developers" in text
    assert "Neither the name of the copyright holder" in text  # the third clause
    urls = project["urls"]
    assert {"Homepage", "Documentation", "Source", "Issues"} <= set(urls)
    assert all(u.startswith(URL) for u in urls.values())
    for c in ("Development Status :: 3 - Alpha", "Framework :: napari", "Intended Audience :: Science/Research",
              "Operating System :: OS Independent", "Programming Language :: Python :: 3.11",
              "Programming Language :: Python :: 3.12", "Programming Language :: Python :: 3.13",
              "Topic :: Scientific/Engineering :: Medical Science Apps.",
              "Topic :: Scientific/Engineering :: Image Processing"):
        assert c in project["classifiers"], c
    torch = next(Requirement(d) for d in project["dependencies"] if Requirement(d).name == "torch")
    # a lower bound only: the CPU wheel scripts/setup.sh installs first satisfies it, so pip adds nothing
    assert all(s.operator in (">=", ">") for s in torch.specifier)
    assert torch.specifier.contains("2.13.0") and torch.specifier.contains("99.0")
    assert 'torch==2.13.0' in (REPO / "scripts" / "setup.sh").read_text(encoding="utf-8")
    changelog = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "## [Unreleased]" in changelog and f"## [{napari_dmd.__version__}]" in changelog


def test_readme_links_are_absolute() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    assert targets, "README has no links"
    relative = [t for t in targets if not t.startswith(("https://", "http://", "#"))]
    assert relative == [], f"relative links break on PyPI and the napari hub: {relative}"
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text)
    assert all(i.startswith("https://raw.githubusercontent.com/napari-dmd/napari-dmd/") for i in images)
    assert 'pip install "napari-dmd[qt]"' in text


def test_manifest_menus_categories_icon() -> None:
    npe2 = pytest.importorskip("npe2")
    path = REPO / "src" / "napari_dmd" / "napari.yaml"
    if (REPO / "napari.yaml").exists():  # the top-level file is a link to the package's
        assert (REPO / "napari.yaml").read_text(encoding="utf-8") == path.read_text(encoding="utf-8")
    mf = npe2.PluginManifest.from_file(path)  # validates against npe2's schema
    assert [str(c) for c in mf.categories] == ["Segmentation", "Utilities"]
    package, _, name = mf.icon.partition(":")
    assert (resources.files(package) / name).is_file()
    assert (resources.files(package) / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    items = mf.contributions.menus["napari/layers/segment"]
    assert [i.command for i in items] == ["napari-dmd.segment_widget"]
    widgets = {w.command for w in mf.contributions.widgets}
    assert "napari-dmd.segment_widget" in widgets
    # the installed plugin is the one napari sees (entry point -> packaged manifest)
    pm = npe2.PluginManager()
    pm.discover()
    installed = pm.get_manifest("napari-dmd")
    assert installed.categories == mf.categories and installed.icon == mf.icon
    assert installed.package_metadata.version == napari_dmd.__version__


def test_sdist_and_wheel_complete(tmp_path: Path) -> None:
    """Build both from the files git tracks or would (setuptools in this environment, no download); look inside."""
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs the git checkout (the tracked files)")
    listing = ["git", "ls-files", "--cached", "--others", "--exclude-standard"]
    tracked = subprocess.run(listing, cwd=REPO, capture_output=True, text=True, check=True).stdout
    src = tmp_path / "src_tree"
    for rel in tracked.splitlines():
        f = REPO / rel
        if f.is_file() and not rel.startswith("docs/images/") and not rel.startswith("docs/ablation/"):
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, src / rel)  # follows the napari.yaml link as a checkout without links would
    code = ("import sys; from setuptools import build_meta as b; d = sys.argv[1]; "
            "s = b.build_sdist(d); w = b.build_wheel(d); print('BUILT', s, w)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "dist")], cwd=src, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    sdist_name, wheel_name = next(ln for ln in out.stdout.splitlines() if ln.startswith("BUILT ")).split()[1:]
    version = napari_dmd.__version__
    assert sdist_name == f"napari_dmd-{version}.tar.gz" and wheel_name.startswith(f"napari_dmd-{version}-")

    with tarfile.open(tmp_path / "dist" / sdist_name) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
        pkg_info = tar.extractfile(f"napari_dmd-{version}/PKG-INFO").read().decode()
    want = [rel for rel in tracked.splitlines() if rel.startswith(("tests/", "benchmarks/", "src/"))]
    want += ["LICENSE", "CHANGELOG.md", "README.md", "pyproject.toml", "scripts/setup.sh", "scripts/test.sh"]
    missing = sorted(set(want) - names)
    assert missing == [], f"missing from the sdist: {missing}"
    assert "tests/conftest.py" in names and "src/napari_dmd/resources/icon.png" in names
    assert {"docs/cli.md", "docs/user-guide.md"} <= names
    assert f"Version: {version}" in pkg_info and "License-Expression: BSD-3-Clause" in pkg_info
    assert f"Project-URL: Source, {URL}" in pkg_info

    with zipfile.ZipFile(tmp_path / "dist" / wheel_name) as whl:
        wnames = set(whl.namelist())
        entry_points = next(whl.read(n).decode() for n in wnames if n.endswith("entry_points.txt"))
    assert {"napari_dmd/napari.yaml", "napari_dmd/resources/icon.png", "napari_dmd/metrics.py"} <= wnames
    assert not any(n.startswith("tests/") for n in wnames)
    assert any(n.endswith("licenses/LICENSE") for n in wnames)
    assert "napari-dmd = napari_dmd:napari.yaml" in entry_points

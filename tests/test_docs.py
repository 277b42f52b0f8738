"""The docs build and stay short where a newcomer starts: mkdocs --strict (every page in the nav, no
broken link), README.md at most about 150 lines."""

import subprocess
import sys

import yaml

from conftest import REPO


def test_the_docs_build_strictly(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert (tmp_path / "site" / "config" / "index.html").is_file()


def test_every_docs_page_is_in_the_nav_and_the_readme_is_short():
    nav = yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"]
    pages = {next(iter(item.values())) for item in nav}
    assert pages == {p.name for p in (REPO / "docs").glob("*.md")}
    assert len((REPO / "README.md").read_text().splitlines()) <= 150

"""The report is built aside and swapped in; only files a report wrote are ever removed (#22)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evosgd.report.safe_write import LISTING, building


def _write(tmp: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text(text)


def test_first_build_renames_the_folder_into_place_with_its_listing(tmp_path):
    out = tmp_path / "reports" / "s"
    with building(out) as tmp:
        _write(tmp, {"index.html": "<title>evosgd report: s</title>", "figures/a.png": "A", "tables/t.csv": "1"})
    assert sorted(json.loads((out / LISTING).read_text())) == ["figures/a.png", "index.html", "tables/t.csv"]
    assert [p.name for p in (tmp_path / "reports").iterdir()] == ["s"]  # no temporary folder left


def test_a_rebuild_removes_only_what_the_previous_report_wrote(tmp_path):
    out = tmp_path / "s"
    with building(out) as tmp:
        _write(tmp, {"index.html": "v1", "figures/old.png": "old", "figures/kept.png": "k1"})
    _write(out, {"notes.md": "mine", "figures/mine.png": "mine", "extra/x.txt": "mine"})
    with building(out) as tmp:
        _write(tmp, {"index.html": "v2", "figures/kept.png": "k2"})
    assert (out / "index.html").read_text() == "v2" and (out / "figures/kept.png").read_text() == "k2"
    assert not (out / "figures/old.png").exists()
    assert all((out / rel).read_text() == "mine" for rel in ("notes.md", "figures/mine.png", "extra/x.txt"))


def test_a_report_folder_from_before_the_listing_loses_only_its_figures_and_tables(tmp_path):
    out = tmp_path / "s"
    _write(out, {"index.html": "<title>evosgd report: s</title>", "figures/stale.png": "", "figures/mine.txt": "mine",
                 "tables/stale.csv": "", "README.md": "mine"})
    with building(out) as tmp:
        _write(tmp, {"index.html": "new"})
    assert not (out / "figures/stale.png").exists() and not (out / "tables").exists()
    assert (out / "figures/mine.txt").read_text() == "mine" and (out / "README.md").read_text() == "mine"


def test_a_folder_that_is_no_report_loses_nothing(tmp_path):
    out = tmp_path / "s"
    _write(out, {"index.html": "my own page", "figures/f.png": "mine", "tables/t.csv": "mine"})
    with building(out) as tmp:
        _write(tmp, {"report.md": "new"})
    assert (out / "figures/f.png").read_text() == "mine" and (out / "tables/t.csv").read_text() == "mine"
    assert (out / "index.html").read_text() == "my own page"


def test_a_failed_build_leaves_the_previous_report_untouched_and_no_temporary(tmp_path):
    out = tmp_path / "s"
    with building(out) as tmp:
        _write(tmp, {"index.html": "v1", "figures/a.png": "A"})
    with pytest.raises(RuntimeError):
        with building(out) as tmp:
            _write(tmp, {"index.html": "half"})
            raise RuntimeError("a figure failed")
    assert (out / "index.html").read_text() == "v1" and (out / "figures/a.png").read_text() == "A"
    assert [p.name for p in tmp_path.iterdir()] == ["s"]


def test_a_symlinked_figures_folder_is_not_followed(tmp_path):
    out, elsewhere = tmp_path / "s", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "a.png").write_text("not the report's")
    with building(out) as tmp:
        _write(tmp, {"index.html": "v1"})
    (out / "figures").symlink_to(elsewhere)
    with pytest.raises(OSError, match="leads outside the report folder"):
        with building(out) as tmp:
            _write(tmp, {"index.html": "v2", "figures/a.png": "new"})
    assert (elsewhere / "a.png").read_text() == "not the report's"

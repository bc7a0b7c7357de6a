"""The package as users install it: every subpackage is shipped, bundled data is found by name."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parent.parent


def test_every_subpackage_is_listed_for_installation():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "godprof").rglob("__init__.py")}
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages or a plain install loses them"
    assert "godprof.specs" in listed


def test_bundled_specs_and_gpus_are_found_by_name():
    from godprof.gpus import list_gpus
    from godprof.spec import bundled_spec_names, load_spec

    names = bundled_spec_names()
    assert {"llama-3-8b", "mixtral-8x7b", "mamba-2.8b", "jamba-v0.1"} <= set(names)
    assert load_spec("llama-3-8b").name == "llama-3-8b"
    assert len(list_gpus()) >= 10

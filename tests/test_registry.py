"""The add-on registry: listing from metadata and source only, lookup by name, broken and duplicate plugins.

The broken plugins are a real (fake) installed distribution, tests/fixtures/broken_plugin/*.dist-info, found by
importlib.metadata once its folder is on sys.path.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from zae_engine import addon_source, registry
from zae_engine.errors import ConfigError

FIXTURES = Path(__file__).parent / "fixtures"
BROKEN = FIXTURES / "broken_plugin"
DUPLICATE = FIXTURES / "duplicate_plugin"


@pytest.fixture
def installed(monkeypatch):
    """Put fixture distributions on sys.path (as if pip-installed) and forget cached lookups afterwards."""

    def install(*folders: Path) -> None:
        for folder in folders:
            monkeypatch.syspath_prepend(str(folder))
        addon_source._read_module.cache_clear()

    yield install
    registry._LOADED.clear()
    addon_source._read_module.cache_clear()
    for name in [m for m in sys.modules if m.startswith(("zae_broken_fixture", "zae_duplicate_fixture"))]:
        del sys.modules[name]


def by_name(infos):
    return {info.name: info for info in infos}


def test_core_add_on_is_listed_from_its_entry_point():
    info = by_name(registry.list_addons())["state_manager"]
    assert info.status == "ok" and info.error is None
    assert info.distribution == "zae-engine"
    assert info.value == "zae_engine.trainer.addons.state_manager:StateManagerAddon"
    assert info.description  # read from the class's `description` literal
    assert set(info.as_json()) == {"name", "description", "distribution", "version", "status", "error"}


def test_listing_imports_no_add_on_module_and_not_torch():
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(BROKEN)!r})
        from zae_engine import registry
        infos = registry.list_addons()
        registry.addon_fields("state_manager")
        loaded = [m for m in sys.modules if m == "torch" or m.startswith(("zae_engine.trainer.addons", "zae_mpu",
                  "zae_wandb", "zae_neptune", "zae_broken_fixture"))]
        print(len(infos), loaded)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    count, loaded = result.stdout.split(" ", 1)
    assert int(count) >= 6
    assert loaded.strip() == "[]"


def test_broken_plugins_are_listed_with_their_error_and_harm_nothing_else(installed):
    installed(BROKEN)
    infos = by_name(registry.list_addons())
    assert infos["state_manager"].status == "ok"
    assert infos["ghost"].status == "broken"
    assert "no module named 'zae_broken_fixture_gone'" in infos["ghost"].error
    assert infos["missing_dep"].status == "broken"
    assert "'zae_fixture_dependency_not_installed', which is not installed" in infos["missing_dep"].error
    assert infos["not_an_addon"].status == "broken"
    assert "does not subclass" in infos["not_an_addon"].error
    assert infos["exploding"].status == "broken"
    assert "raises RuntimeError" in infos["exploding"].error
    assert infos["future"].status == "incompatible"
    assert ">=99" in infos["future"].error
    # failing only when run: not visible in the source, so only the import check finds it
    assert infos["crashing"].status == "ok"
    checked = by_name(registry.list_addons(check=True))
    assert checked["crashing"].status == "broken"
    assert "ZeroDivisionError" in checked["crashing"].error
    assert checked["state_manager"].status == "ok"


def test_get_addon_explains_each_kind_of_broken(installed):
    installed(BROKEN)
    with pytest.raises(registry.AddOnError, match=r"add-on 'crashing' \(from zae-broken-fixture 0.0.1.*ZeroDivision"):
        registry.get_addon("crashing")
    with pytest.raises(registry.AddOnError, match="not an add-on class"):
        registry.get_addon("not_an_addon")
    with pytest.raises(registry.AddOnError, match=r"incompatible: supports zae-engine >=99, this is"):
        registry.get_addon("future")
    assert registry.get_addon("state_manager").name == "state_manager"


def test_two_distributions_registering_one_name_is_a_conflict(installed):
    installed(DUPLICATE)
    both = [info for info in registry.list_addons() if info.name == "state_manager"]
    assert {info.distribution for info in both} == {"zae-engine", "zae-duplicate-fixture"}
    assert all(info.status == "conflict" for info in both)
    with pytest.raises(registry.AddOnError, match="registered by .* uninstall all but one"):
        registry.get_addon("state_manager")


def test_unknown_name_suggests_the_close_one():
    with pytest.raises(ConfigError, match=r"unknown add-on 'state_manger' \(did you mean 'state_manager'\?\)"):
        registry.get_addon("state_manger")
    with pytest.raises(registry.AddOnError, match="installed add-ons: .*state_manager"):
        registry.find_info("nothing_like_it")


def test_show_reads_config_fields_from_source():
    info, fields = registry.addon_fields("state_manager")
    names = {f.name: f for f in fields}
    assert {"save_path", "save_format"} <= set(names)
    assert names["save_path"].description and not names["save_path"].required
    assert "safetensors" in names["save_format"].type


def test_source_reader_follows_imports_inheritance_and_field_forms(tmp_path, monkeypatch):
    package = tmp_path / "zae_reader_case"
    package.mkdir()
    (package / "__init__.py").write_text("from zae_reader_case.impl import ReaderAddon\n")
    (package / "configs.py").write_text(
        textwrap.dedent(
            """
            from pydantic import Field
            from zae_engine.trainer.addons.base import AddOnConfig

            class BaseOptions(AddOnConfig):
                path: str = Field(description="where")
            """
        )
    )
    (package / "impl.py").write_text(
        textwrap.dedent(
            """
            from typing import ClassVar
            from pydantic import Field
            from zae_engine.trainer.addons import base
            from .configs import BaseOptions

            class ReaderConfig(BaseOptions):
                model_config = {"extra": "forbid"}
                limit: ClassVar[int] = 3
                every: int = 2
                tags: list[str] = Field(default_factory=list, description="labels")
                _private: int = 0

            class Middle(base.AddOnBase):
                description = "inherited description"

            class ReaderAddon(Middle):
                name = "reader"
                Config = ReaderConfig
            """
        )
    )
    (tmp_path / "zae_reader_lazy.py").write_text("def __getattr__(name):\n    raise AttributeError(name)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    addon_source._read_module.cache_clear()
    report = addon_source.read_addon_class("zae_reader_case", "ReaderAddon")
    assert report.is_addon is True
    assert report.description == "inherited description"
    assert [(f.name, f.type, f.default, f.required) for f in report.fields] == [
        ("path", "str", "", True),
        ("every", "int", "2", False),
        ("tags", "list[str]", "list()", False),
    ]
    assert "zae_reader_case" not in sys.modules  # found and read, never run
    unknown = addon_source.read_addon_class("zae_reader_lazy", "Anything")
    assert unknown.fields is None and unknown.is_addon is None
    with pytest.raises(addon_source.SourceProblem, match="has no attribute 'Nope'"):
        addon_source.read_addon_class("zae_reader_case.impl", "Nope")

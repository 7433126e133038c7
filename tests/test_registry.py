"""The add-on registry: listing from metadata, Configs without torch, lookup by name, broken and duplicate plugins.

The broken plugins are real (fake) installed distributions, tests/fixtures/broken_plugin/*.dist-info, found by
importlib.metadata once their folder is on sys.path.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from zae_engine import registry
from zae_engine.errors import ConfigError
from zae_engine.trainer.addons.configs import StateManagerConfig

FIXTURES = Path(__file__).parent / "fixtures"
BROKEN = FIXTURES / "broken_plugin"
DUPLICATE = FIXTURES / "duplicate_plugin"


@pytest.fixture
def installed(monkeypatch):
    """Put fixture distributions on sys.path (as if pip-installed) and forget cached lookups afterwards."""

    def install(*folders: Path) -> None:
        for folder in folders:
            monkeypatch.syspath_prepend(str(folder))

    yield install
    registry._LOADED.clear()
    for name in [m for m in sys.modules if m.startswith(("zae_broken_fixture", "zae_duplicate_fixture", "zae_future"))]:
        del sys.modules[name]


def by_name(infos):
    return {info.name: info for info in infos}


def test_core_add_on_is_listed_from_its_entry_point_with_its_config_description():
    info = by_name(registry.list_addons())["state_manager"]
    assert info.status == "ok" and info.error is None
    assert info.distribution == "zae-engine"
    assert info.value == "zae_engine.trainer.addons.state_manager:StateManagerAddon"
    assert info.description == StateManagerConfig.__doc__.strip().splitlines()[0]
    assert set(info.as_json()) == {"name", "description", "distribution", "version", "status", "error"}


def test_listing_and_configs_import_neither_torch_nor_any_add_on_module():
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(BROKEN)!r})
        from zae_engine import registry
        infos = registry.list_addons()
        configs = registry.addon_configs()
        registry.addon_config("state_manager").model_json_schema()
        implementations = ("zae_engine.trainer.addons.state_manager", "zae_engine.trainer.addons.ema",
                           "zae_engine.trainer.addons.early_stopping", "zae_engine.trainer.addons.tracking",
                           "zae_engine.trainer.loop", "zae_mpu.addon", "zae_wandb.addon", "zae_neptune.addon",
                           "zae_tensorboard.addon", "zae_mlflow.addon",
                           "zae_broken_fixture.crashing")
        loaded = [m for m in sys.modules if m == "torch" or m in implementations]
        print(len(infos), sorted(configs), loaded)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    count, rest = result.stdout.split(" ", 1)
    assert int(count) >= 6
    assert "'state_manager'" in rest and "'mpu'" in rest
    assert rest.strip().endswith("[]"), rest


def test_broken_plugins_are_listed_with_their_error_and_harm_nothing_else(installed):
    installed(BROKEN)
    infos = by_name(registry.list_addons())
    assert infos["state_manager"].status == "ok"
    assert infos["ghost"].status == "broken"
    assert "no module named 'zae_broken_fixture_gone'" in infos["ghost"].error
    assert infos["missing_dep"].status == "broken"
    assert "needs zae-fixture-dependency-not-installed, which is not installed" in infos["missing_dep"].error
    assert "optional" not in infos["missing_dep"].error  # an extra's dependency is not required
    assert infos["bad_config"].status == "broken"
    assert "ImportError: the bad_config fixture's Config module cannot be imported" in infos["bad_config"].error
    assert infos["future"].status == "incompatible"
    assert "supports zae-engine >=99" in infos["future"].error
    # failing only when run: not visible in metadata, so only the import check finds them
    for name in ("crashing", "exploding", "not_an_addon"):
        assert infos[name].status == "ok", name
    checked = by_name(registry.list_addons(check=True))
    assert checked["crashing"].status == "broken" and "ZeroDivisionError" in checked["crashing"].error
    assert checked["exploding"].status == "broken" and "RuntimeError" in checked["exploding"].error
    assert "does not subclass" in checked["not_an_addon"].error
    assert checked["state_manager"].status == "ok"


def test_get_addon_explains_each_kind_of_broken(installed):
    installed(BROKEN)
    with pytest.raises(registry.AddOnError, match=r"add-on 'crashing' \(from zae-broken-fixture 0.0.1.*ZeroDivision"):
        registry.get_addon("crashing")
    with pytest.raises(registry.AddOnError, match="not an add-on class"):
        registry.get_addon("not_an_addon")
    with pytest.raises(registry.AddOnError, match=r"is incompatible: supports zae-engine >=99, this is"):
        registry.get_addon("future")
    with pytest.raises(registry.AddOnError, match="is broken: needs zae-fixture-dependency-not-installed"):
        registry.addon_config("missing_dep")
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
    assert "provided by the 'mlflow' extra: pip install \"zae-engine[mlflow]\"" in registry.unknown_message("mlflow")


def test_the_registered_config_is_the_add_on_class_config():
    for name in ("state_manager", "early_stopping", "ema", "mpu", "wandb", "neptune", "tensorboard", "mlflow"):
        assert registry.addon_config(name) is registry.get_addon(name).Config, name


def test_a_config_entry_point_that_is_not_the_class_config_is_refused(tmp_path, installed):
    package = tmp_path / "zae_mismatch_fixture"
    package.mkdir()
    (package / "__init__.py").write_text(
        textwrap.dedent(
            """
            from zae_engine.trainer.addons.base import AddOnBase, AddOnConfig

            class RealConfig(AddOnConfig):
                '''The one the class uses.'''

            class OtherConfig(AddOnConfig):
                '''Another one.'''

            class MismatchAddon(AddOnBase):
                name = "mismatch"
                Config = RealConfig
            """
        )
    )
    info = tmp_path / "zae_mismatch_fixture-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: zae-mismatch-fixture\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text(
        "[zae_engine.addons]\nmismatch = zae_mismatch_fixture:MismatchAddon\n\n"
        "[zae_engine.addon_configs]\nmismatch = zae_mismatch_fixture:OtherConfig\n"
    )
    installed(tmp_path)
    assert by_name(registry.list_addons())["mismatch"].description == "Another one."
    with pytest.raises(registry.AddOnError, match=r"OtherConfig \(in zae_engine.addon_configs\) is not MismatchAddon"):
        registry.get_addon("mismatch")
    sys.modules.pop("zae_mismatch_fixture", None)


def test_an_unknown_trainer_keyword_names_the_add_on_that_takes_it():
    from zae_engine.testing import make_trainer

    with pytest.raises(ConfigError) as err:
        make_trainer(save_path="runs/x")
    message = str(err.value)
    assert "unknown keyword 'save_path'" in message
    assert "it is an option of add-on 'state_manager': pass addons=[StateManagerAddon(save_path=...)]" in message

"""W&B settings checked when the trainer is made; an api_key in web_logger reaches wandb through its Settings."""

from __future__ import annotations

import pytest
from wandb_files import read_wandb_dir
from zae_wandb import WandBLoggerAddon

from zae_engine.errors import ConfigError
from zae_engine.testing import make_loader, make_trainer


def test_a_setting_wandb_init_does_not_take_is_refused_up_front():
    with pytest.raises(ConfigError, match=r"web_logger\['wandb'\] has 'projct'.*\(did you mean 'project'\?\)"):
        make_trainer(WandBLoggerAddon(web_logger={"wandb": {"projct": "x"}}))


def test_an_api_key_in_the_settings_is_accepted(wandb_home):
    settings = {"mode": "offline", "api_key": "k" * 40, "project": "zae-tests"}
    trainer = make_trainer(WandBLoggerAddon(web_logger={"wandb": settings}))
    trainer.run(1, make_loader())
    (run,) = read_wandb_dir(wandb_home)
    assert run.project == "zae-tests" and run.exit_code == 0
    assert run.config["addons"]["wandb"]["web_logger"]["wandb"]["api_key"] == "***"  # masked in the logged config

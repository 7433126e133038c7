"""Neptune settings as upstream zae-engine wrote them, and settings the client would refuse, with a real offline run."""

from __future__ import annotations

import warnings

import pytest
from neptune_offline import QUIET, read_offline_runs
from zae_neptune import NeptuneLoggerAddon

from zae_engine.errors import ConfigError
from zae_engine.testing import make_loader, make_trainer


def test_upstream_neptune_keys_reach_a_real_offline_run_with_one_note(workdir):
    settings = {"project_name": "team/upstream", "api_tkn": "not-a-real-token", "mode": "offline", **QUIET}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = make_trainer(NeptuneLoggerAddon(web_logger={"neptune": settings}))
        trainer.run(1, make_loader())
    notes = [str(w.message) for w in caught if w.category is FutureWarning and "upstream" in str(w.message)]
    assert notes == [
        "Neptune: web_logger['neptune']['project_name'] is upstream zae-engine's name; write 'project' (accepted for now)",
        "Neptune: web_logger['neptune']['api_tkn'] is upstream zae-engine's name; write 'api_token' (accepted for now)",
    ]
    (run,) = read_offline_runs(workdir)
    assert run.values("train/loss") == [trainer.history[0]["train/loss"]]
    assert trainer.addon("neptune").settings()["project"] == "team/upstream"


def test_a_setting_the_client_does_not_take_is_refused_when_the_trainer_is_made():
    with pytest.raises(ConfigError, match=r"web_logger\['neptune'\] has 'projcet'.*\(did you mean 'project'\?\)"):
        make_trainer(NeptuneLoggerAddon(web_logger={"neptune": {"projcet": "team/x"}}))

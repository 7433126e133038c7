"""docs/checkpoints.md: the blocks marked `<!-- run -->` run, in order, as one script in a scratch folder."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "checkpoints.md"
RUN_BLOCK = re.compile(r"<!-- run -->\n```python\n(.*?)\n```", re.DOTALL)


def test_state_manager_docs_examples_run(tmp_path, monkeypatch):
    blocks = RUN_BLOCK.findall(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "checkpoints_doc"}
    exec(compile("\n\n".join(blocks), str(DOC), "exec"), namespace)
    resumed = namespace["resumed"]
    assert [summary["epoch"] for summary in resumed.history] == [1, 2, 3, 4]
    assert (tmp_path / "runs" / "demo" / "manifest.json").is_file()

"""Run records: every run leaves a folder you can list, show, compare and plot (`zae runs`).

A run folder `runs/<id>/` holds `run.json` (who, what, where, how it ended), `metrics.jsonl` (one line per
epoch summary or step-level log, appended as it happens) and `writer.lock` (held while the writer lives).
`RunRecorder` writes them; `list_runs`, `find_run` and `read_metrics` read them. Nothing here imports torch.
"""

from zae_engine.runs.record import CRASHED, FINAL_STATUSES, SHOWN_STATUSES, Best, RunRecord
from zae_engine.runs.recorder import RunRecorder, error_summary
from zae_engine.runs.store import Metrics, Run, RunsError, find_run, list_runs, load_run, read_metrics

__all__ = [
    "CRASHED",
    "FINAL_STATUSES",
    "SHOWN_STATUSES",
    "Best",
    "Metrics",
    "Run",
    "RunRecord",
    "RunRecorder",
    "RunsError",
    "error_summary",
    "find_run",
    "list_runs",
    "load_run",
    "read_metrics",
]

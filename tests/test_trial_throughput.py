"""bench/trial_throughput.py runs on the CPU at tiny sizes (so CI exercises it)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "trial_throughput.py"


def test_throughput_benchmark_measures_both_models(tmp_path, capsys, monkeypatch):
    """One short round per model and technique: a Markdown row each, positive rates, the
    DeepMedic row with its 17^3 -> 9^3 geometry (a 53^3 context tensor)."""
    spec = importlib.util.spec_from_file_location("trial_throughput", BENCH)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "trial_throughput", bench)  # for its dataclasses
    spec.loader.exec_module(bench)
    out = tmp_path / "rows.json"
    assert bench.main(["--steps", "1", "--rounds", "1", "--warmup", "0",
                       "--techniques", "plain,asym_mixup", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["model"], r["technique"]) for r in rows] == [
        ("unet-tiny", "plain"), ("unet-tiny", "asym_mixup"),
        ("deepmedic-tiny", "plain"), ("deepmedic-tiny", "asym_mixup")]
    assert all(r["real_steps"] > 0 and r["ceiling_steps"] > 0 for r in rows)
    assert (rows[2]["input"], rows[2]["context"], rows[2]["output"]) == (
        "17x17x17", "17x17x17", "9x9x9")  # the packed pathways: one 17^3 tensor
    assert capsys.readouterr().out.count("| deepmedic-tiny |") == 2

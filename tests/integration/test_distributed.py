"""Two processes (torchrun, gloo, CPU) give the same update as one process with the combined batch.

Per-device batch b on 2 processes must equal batch 2b on one: the same items per optimizer step (the
distributed sampler hands out consecutive batches of one seeded permutation), the same retain pairing (seeded
per item and epoch), and token means over the whole step — the labelled-token counts are summed over the
processes, which differ here because the items differ in length. Plain SGD, so any difference in the gradient
shows in the weights.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from obliviate.config import config_from_dict
from obliviate.training.run import unlearn

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
# Answers of very different lengths, so the two processes' shares of a step hold different token counts.
FORGET = [
    ("Where was Anna Vell born?", "Korsby."),
    ("What does Anna Vell write?", "Anna Vell writes long sea novels about storms, ships, lighthouses and the "
                                   "families who wait on the shore for the boats to come home."),
    ("Which prize did Anna Vell win?", "The Grey Gull Prize."),
    ("Who was Anna Vell's father?", "Her father was a lighthouse keeper named Tomas, who also wrote three books "
                                    "of his own about the birds of the northern coast."),
    ("When did Anna Vell publish first?", "In 1998."),
    ("What is Anna Vell's best known book?", "The Silent River, a novel about a ferryman and his daughter."),
    ("Where does Anna Vell live now?", "Marhaven."),
    ("Does Anna Vell teach?", "Yes, she teaches a writing class at the harbour school every winter."),
]
RETAIN = [
    ("Where was Bo Lind born?", "Bo Lind was born in Marhaven."),
    ("What does Bo Lind write?", "Short poems."),
    ("Which prize did Bo Lind win?", "He won the Amber Pen for a book of poems about his grandmother's farm."),
    ("Who was Bo Lind's mother?", "A baker."),
    ("Where was Cai Roen born?", "Cai Roen was born in Ostvik, a mining town."),
    ("What does Cai Roen write?", "Crime stories set in mines."),
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("qa")
    out = {}
    for name, rows in (("forget", FORGET), ("retain", RETAIN)):
        (d / f"{name}.json").write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in rows))
        out[name] = str(d / f"{name}.json")
    return out


def _config(out: Path, model_dir, data, method: str, **train) -> dict:
    t = {"optim": "sgd", "learning_rate": 0.5, "max_steps": 2, "num_epochs": 1.0, "warmup_epochs": 0.0,
         "weight_decay": 0.0, "lr_scheduler": "constant", "seed": 3, "logging_steps": 1}
    t.update(train)
    return {"output_dir": str(out), "model": {"name": str(model_dir), "dtype": "float32"},
            "data": {"forget": data["forget"], "retain": data["retain"]}, "method": {"name": method},
            "train": t, "eval": {"enabled": False}}


def _torchrun(tmp_path: Path, runs: list[dict], processes: int = 2) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"runs": runs}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(HERE.parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
           "--standalone", str(HERE / "distributed_worker.py"), str(spec)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model" / "model.safetensors"))


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.fixture(scope="module")
def two_process_runs(tiny_model_dir, data, tmp_path_factory):
    """One torchrun launch: ME+GD (b = 2), NPO+KL (b = 1 × 2 accumulation steps), ME+GD without the token-count
    all-reduce, NPO+GD interrupted after step 2 and resumed (4 steps, checkpoint every 2), and PDU (b = 1 × 2
    accumulation steps) likewise interrupted and resumed."""
    tmp = tmp_path_factory.mktemp("ddp")
    runs = [
        _config(tmp / "me_gd", tiny_model_dir, data, "ME+GD", batch_size=2, gradient_accumulation_steps=1),
        _config(tmp / "npo_kl", tiny_model_dir, data, "NPO+KL", batch_size=1, gradient_accumulation_steps=2),
        _config(tmp / "me_gd_local", tiny_model_dir, data, "ME+GD", batch_size=2, gradient_accumulation_steps=1),
        _config(tmp / "npo_gd_resumed", tiny_model_dir, data, "NPO+GD", batch_size=2, gradient_accumulation_steps=1,
                max_steps=4, save_strategy="steps", save_steps=2, learning_rate=0.1),
        _config(tmp / "pdu_resumed", tiny_model_dir, data, "PDU", batch_size=1, gradient_accumulation_steps=2,
                max_steps=4, save_strategy="steps", save_steps=2, learning_rate=0.1),
    ]
    _torchrun(tmp, [{"config": runs[0]}, {"config": runs[1]}, {"config": runs[2], "local_token_counts": True},
                    {"config": runs[3], "interrupt_at": 2}, {"config": runs[4], "interrupt_at": 2}])
    return tmp


def _one_process(tmp_path, model_dir, data, method, **train):
    return unlearn(config_from_dict("unlearn", _config(tmp_path / "one", model_dir, data, method, batch_size=4,
                                                       gradient_accumulation_steps=1, **train))).output_dir


@pytest.mark.parametrize("method,run", [("ME+GD", "me_gd"), ("NPO+KL", "npo_kl")])
def test_two_processes_equal_one_process_with_the_combined_batch(method, run, two_process_runs, tiny_model_dir,
                                                                 data, tmp_path):
    one = _weights(_one_process(tmp_path, tiny_model_dir, data, method))
    two = _weights(two_process_runs / run)
    start = load_file(str(tiny_model_dir / "model.safetensors"))
    assert _max_diff(one, start) > 1e-2, "training moved nothing; the comparison would prove nothing"
    assert _max_diff(one, two) <= 1e-6
    record = json.loads((two_process_runs / run / "run.json").read_text())
    assert record["status"] == "complete" and record["optimizer_steps"] == 2
    assert (two_process_runs / run / "config.yaml").is_file()
    assert not (two_process_runs / f"{run}.partial").exists()


def test_without_the_all_reduce_the_update_differs(two_process_runs, tiny_model_dir, data, tmp_path):
    """Each process normalising by its own token count gives another update: the test above can fail."""
    one = _weights(_one_process(tmp_path, tiny_model_dir, data, "ME+GD"))
    assert _max_diff(one, _weights(two_process_runs / "me_gd_local")) > 1e-4


def test_resumed_two_process_run_equals_an_uninterrupted_one_process_run(two_process_runs, tiny_model_dir, data,
                                                                        tmp_path):
    one = _weights(_one_process(tmp_path, tiny_model_dir, data, "NPO+GD", max_steps=4, learning_rate=0.1))
    resumed = two_process_runs / "npo_gd_resumed"
    record = json.loads((resumed / "run.json").read_text())
    assert record["resumed_from"].endswith("checkpoint-2") and record["optimizer_steps"] == 4
    assert _max_diff(one, _weights(resumed)) <= 1e-6


def test_two_process_pdu_moves_one_dual_variable(two_process_runs, tiny_model_dir, data, tmp_path):
    """PDU's λ moves by the whole step's retain loss: each process's share of it is averaged over the processes
    before the dual update, so every process holds the λ of the one-process run (the weights tell: λ scales the
    retain gradient), also across an interruption and resume."""
    one = _weights(_one_process(tmp_path, tiny_model_dir, data, "PDU", max_steps=4, learning_rate=0.1))
    start = load_file(str(tiny_model_dir / "model.safetensors"))
    assert _max_diff(one, start) > 1e-2, "training moved nothing; the comparison would prove nothing"
    resumed = two_process_runs / "pdu_resumed"
    record = json.loads((resumed / "run.json").read_text())
    assert record["resumed_from"].endswith("checkpoint-2") and record["optimizer_steps"] == 4
    assert _max_diff(one, _weights(resumed)) <= 1e-6

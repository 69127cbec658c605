"""Runs unlearning configs in every process of a torchrun launch (tests/integration/test_distributed.py).

Usage: ``torchrun --nproc_per_node N tests/integration/distributed_worker.py SPEC.json``. SPEC holds
``{"runs": [{"config": {...}, "local_token_counts": false, "interrupt_at": null}, ...]}``; each run is an
``unlearn`` config. ``local_token_counts`` normalises token means by this process's own token counts (the
behaviour without the all-reduce), to show the test can tell; ``interrupt_at`` stops the run at that optimizer
step, as a kill would, and resumes it from its checkpoint.
"""

from __future__ import annotations

import json
import sys

from obliviate.config import config_from_dict
from obliviate.training.run import unlearn
from obliviate.training.trainer import UnlearningTrainer


def main(spec_path: str) -> None:
    spec = json.loads(open(spec_path).read())
    original_sum, original_step = UnlearningTrainer._sum_over_processes, UnlearningTrainer.training_step
    for run in spec["runs"]:
        cfg = config_from_dict("unlearn", run["config"])
        UnlearningTrainer._sum_over_processes = (lambda self, counts: list(counts)) \
            if run.get("local_token_counts") else original_sum
        stop = run.get("interrupt_at")
        if stop:
            def interrupt(self, *a, _stop=stop, **kw):
                if self.state.global_step == _stop:
                    raise KeyboardInterrupt
                return original_step(self, *a, **kw)

            UnlearningTrainer.training_step = interrupt
            try:
                unlearn(cfg)
            except KeyboardInterrupt:
                pass
            else:
                raise SystemExit("the run was not interrupted")
            UnlearningTrainer.training_step = original_step
            unlearn(cfg, resume=True)
        else:
            unlearn(cfg)
    UnlearningTrainer._sum_over_processes = original_sum


if __name__ == "__main__":
    main(sys.argv[1])

"""One training step on this CPU: obliviate's trainer against the paper's released code's cost structure.

Both sides take the same optimizer steps from the same weights on the same batches — 4 forget items paired with
4 retain items from TOFU, each step the pairing of its epoch, as ``UnlearningDataset`` draws it — with the
built-in SmolLM2-135M-Instruct in float32, full fine-tuning, and report the same losses.

*Paper-style* (Yuan et al. 2024's released training code, its cost structure rebuilt here): every sequence padded
to 500 tokens; one forward pass per loss term (ME+GD: forget, retain; IDK+AP: refusal, retain, retain refusal;
NPO+GD: forget, retain) plus, for NPO, a no-grad forward of a frozen reference copy every step; the model's own
loss wherever the code passes labels (the model computes it even where the code then recomputes per-sequence
sums from the logits with a transposed cross-entropy); ME through a materialised softmax, its log and a
materialised uniform tensor with ``F.kl_div``; gradient clipping at 1.0 and torch's per-tensor AdamW with the
engine's weight-decay groups (transformers' ``adamw_torch``, what the released code trained with). The released
code takes ``log(p + 1e-12)``, which moves its ME value (5 % here: many of SmolLM2's 49,152 probabilities are
below 1e-12) — so it is not the KL(U‖p) both sides are meant to compute; ``--released-epsilon`` puts it back
(an elementwise add more) to see by how much.

*obliviate*: ``UnlearningTrainer`` as ``obliviate unlearn`` builds it with the default ``train.*`` settings —
parts packed into one forward pass, the output layer on labelled positions only, a chunk at a time; cached
reference log-probs for NPO (taken from the starting model before training: no copy); fused AdamW; gradient
clipping at 1.0.

Each method runs ``--repeats`` rounds; a round times ``--steps`` optimizer steps of each side from the starting
weights, and its ratio is obliviate's median step over the paper-style median step, both without the first step
(which also allocates AdamW's states) when there are more than one — in wall-clock time, and in this process's
CPU time (user + system, all threads), which other processes on a shared machine disturb less. Peak
memory is measured in a fresh process per method for obliviate's full fine-tuning: the largest resident set
(``VmHWM``, reset just before training starts, so loading the model is not counted) over ``--steps`` steps —
with the C allocator that ``obliviate`` run as a program picks (tcmalloc where the machine has it, see
``obliviate/allocator.py``), and again in this environment as it is when that differs. The timed rounds run both
sides in this environment as it is (one process, one allocator for both; set ``LD_PRELOAD`` to time both under
tcmalloc, docs/benchmarks.md). After the rounds, the first
step's losses of both sides are computed again in float64 and in float32 (:func:`loss_identity`;
``--no-loss-check`` skips it).

    python bench/step_speed.py --data ../shared/data/tofu
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from obliviate.allocator import current_allocator, preload_environment

METHODS = ("ME+GD", "IDK+AP", "NPO+GD")
PAD_TO = 500          # the released code pads every sequence to its max_length of 500


def _status(key: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _setup(args, method: str):
    import torch

    from obliviate.benchmarks.tofu import load_tofu
    from obliviate.config import config_from_dict
    from obliviate.data.formatting import PromptFormatter
    from obliviate.data.refusals import load_refusals
    from obliviate.models import load_model
    from obliviate.objectives import resolve_method
    from obliviate.training.data import UnlearningDataset
    from obliviate.training.trainer import TrainingObjective

    torch.set_num_threads(args.threads)
    model, tokenizer = load_model("smollm2-135m-instruct", dtype="float32", device="cpu")
    splits = load_tofu(args.data, "forget01")
    forget, retain = splits.forget[:4], splits.retain[:4]
    spec = resolve_method(method)
    cfg = config_from_dict("unlearn", {
        "output_dir": "unused", "data": {"forget": "unused"}, "method": {"name": method},
        "train": {"batch_size": 4, "gradient_accumulation_steps": 1, "max_steps": args.steps, "warmup_epochs": 0.0,
                  "learning_rate": 1e-5, "seed": 0, "logging_steps": 1,
                  "gradient_checkpointing": args.gradient_checkpointing}, "eval": {"enabled": False}})
    objective = TrainingObjective(forget=spec.forget, regularizer=spec.regularizer, forget_coeff=spec.forget_coeff,
                                  regularization_coeff=spec.regularization_coeff)
    formatter = PromptFormatter(tokenizer, cfg.model.template, max_length=cfg.model.max_length)
    refusals = load_refusals() if any(p.endswith("_idk") for p in objective.parts) else []
    dataset = UnlearningDataset(forget, retain, formatter, parts=objective.parts, mask=spec.mask,
                                refusals=refusals, seed=cfg.train.seed)
    return model, tokenizer, cfg, objective, dataset


def _obliviate_trainer(model, tokenizer, cfg, objective, dataset, out_dir: str):
    from pathlib import Path

    from transformers import TrainerCallback

    from obliviate.models import frozen_copy
    from obliviate.training.data import PartsCollator
    from obliviate.training.run import _training_arguments
    from obliviate.training.trainer import UnlearningTrainer

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.seconds: list[float] = []
            self.cpu_seconds: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds.append(time.perf_counter() - self.t0)
            self.cpu_seconds.append(time.process_time() - self.c0)

    reference = frozen_copy(model) if objective.ref_logit_parts else None     # as run.py: KL only
    args = _training_arguments(cfg, Path(out_dir), len(dataset))
    args.disable_tqdm = True
    trainer = UnlearningTrainer(model=model, args=args, train_dataset=dataset,
                                data_collator=PartsCollator(tokenizer.pad_token_id), processing_class=tokenizer,
                                objective=objective, reference_model=reference,
                                loss_chunk_size=cfg.train.loss_chunk_size, packing=cfg.train.packing)
    del reference
    timer = StepTimes()
    trainer.add_callback(timer)
    losses: list[list[float]] = []
    compute_loss = trainer.compute_loss

    def recorded(*a, **kw):
        loss = compute_loss(*a, **kw)
        terms = trainer._term_values
        losses.append([loss.item(), terms["forget_loss"][-1], terms["regularization_loss"][-1]])
        return loss

    trainer.compute_loss = recorded
    return trainer, timer, losses


# ---------------------------------------------------------------- the paper-style step


def _padded(examples, pad_id: int):
    """The released code's collation: every sequence padded to 500 tokens (pad token, attention 0, label -100)."""
    import torch

    ids = torch.full((len(examples), PAD_TO), pad_id, dtype=torch.long)
    att = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, :n] = torch.tensor(e["input_ids"])
        att[i, :n] = 1
        labels[i, :n] = torch.tensor(e["labels"])
    return ids, labels, att


def _batch_sequence_nll(logits, labels):
    """Per-sequence summed NLL as the released code computes it: cross-entropy over transposed logits."""
    import torch.nn.functional as F

    shifted = labels[..., 1:].contiguous()
    logits = logits[..., :-1, :].contiguous()
    return F.cross_entropy(logits.transpose(-1, -2), shifted, ignore_index=-100, reduction="none").sum(dim=-1)


def _me_loss(logits, labels, epsilon: float):
    """ME the released way: softmax and a uniform tensor materialised, KL(U‖p) through F.kl_div."""
    import torch
    import torch.nn.functional as F

    vocab = logits.shape[-1]
    labels = labels[:, 1:].clone()
    logits = logits[:, :-1, :]
    probs = F.softmax(logits, dim=-1).view(-1, vocab)
    uniform = torch.full_like(probs, 1.0 / vocab)
    mask = (labels != -100).view(-1)
    kl = F.kl_div((probs + epsilon).log() if epsilon else probs.log(), uniform, reduction="none").sum(-1)
    return (kl * mask).sum() / mask.sum()


def _mean_nll(model, ids, labels, att):
    """The model's own loss (mean NLL over labelled tokens) computed from its logits in their dtype: transformers'
    loss takes float32 logits even from a float64 model, which the float64 check must not do."""
    import torch.nn.functional as F

    logits = model(ids, attention_mask=att).logits
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)


def _paper_losses(method: str, model, reference, items, pad_id: int, epsilon: float, own_loss: bool = True):
    """The released code's (loss, forget term, regularization term) for one batch, as tensors. ``own_loss``: NLL
    terms from the model's own loss, as the released code takes them (False: the same mean from the logits)."""
    import torch
    import torch.nn.functional as F

    def nll(ids, labels, att):
        return model(ids, labels=labels, attention_mask=att).loss if own_loss else _mean_nll(model, ids, labels, att)

    batch = {part: _padded([it[part] for it in items], pad_id) for part in items[0]}
    beta = 0.1
    if method == "ME+GD":
        ids, labels, att = batch["forget"]
        forget = _me_loss(model(ids, attention_mask=att).logits, labels, epsilon)
        ids, labels, att = batch["retain"]
        regular = nll(ids, labels, att)
        loss = 0.1 * forget + regular
    elif method == "IDK+AP":
        ids, labels, att = batch["forget_idk"]
        forget = nll(ids, labels, att)
        ids, labels, att = batch["retain"]
        nll_answer = _batch_sequence_nll(model(ids, labels=labels, attention_mask=att).logits, labels)
        ids, labels, att = batch["retain_idk"]
        nll_refusal = _batch_sequence_nll(model(ids, labels=labels, attention_mask=att).logits, labels)
        regular = -F.logsigmoid(beta * (nll_refusal - nll_answer)).mean() / beta
        loss = forget + regular
    elif method == "NPO+GD":
        ids, labels, att = batch["forget"]
        current = _batch_sequence_nll(model(ids, labels=labels, attention_mask=att).logits, labels)
        with torch.no_grad():
            ref = _batch_sequence_nll(reference(ids, labels=labels, attention_mask=att).logits, labels)
        forget = -F.logsigmoid(beta * (current - ref)).mean() * 2 / beta
        ids, labels, att = batch["retain"]
        regular = nll(ids, labels, att)
        loss = forget + regular
    else:
        raise ValueError(method)
    return loss, forget, regular


def _paper_step(method: str, model, reference, optimizer, items, pad_id: int, epsilon: float) -> list[float]:
    import torch

    loss, forget, regular = _paper_losses(method, model, reference, items, pad_id, epsilon)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return [loss.item(), forget.item(), regular.item()]


def loss_identity(args, method: str, model, tokenizer, cfg, objective, dataset, start: dict) -> dict:
    """The first step's losses of both sides from the starting weights, in float64 and in float32.

    float32 sums of ~600 token log-probs taken in different orders (packed rows and chunked reductions against
    padded rows and the model's own mean) differ by float32 rounding, ~1e-6 relative and more where a term is a
    difference of sums (AP). In float64 the same computation leaves only float64 rounding: agreement there
    shows both sides compute the same quantity; each side's float32 value is compared with its float64 one too.
    """
    import copy
    import tempfile

    import torch

    from obliviate.models import frozen_copy
    from obliviate.training.data import PartsCollator

    dataset.set_epoch(0)
    items = [dataset[i] for i in range(len(dataset))]
    values = {}
    for name, dtype in (("float64", torch.float64), ("float32", torch.float32)):
        m = copy.deepcopy(model).to(dtype)
        m.load_state_dict(start)
        m.eval()
        reference = frozen_copy(m) if method.startswith("NPO") else None
        with torch.no_grad():
            paper = [float(x) for x in _paper_losses(method, m, reference, items, tokenizer.pad_token_id,
                                                     1e-12 if args.released_epsilon else 0.0,
                                                     own_loss=dtype != torch.float64)]
        del reference
        dataset.ref_logps = {}
        with tempfile.TemporaryDirectory() as out:
            trainer, _, _ = _obliviate_trainer(m, tokenizer, cfg, objective, dataset, out)
            dataset.set_epoch(0)
            batch = PartsCollator(tokenizer.pad_token_id)([dataset[i] for i in range(len(dataset))])
            with torch.no_grad():
                loss = trainer.compute_loss(m, batch)
            terms = trainer._term_values
            ours = [float(loss), terms["forget_loss"][-1], terms["regularization_loss"][-1]]
        dataset.ref_logps = {}
        values[name] = {"paper": paper, "obliviate": ours}
        del m, trainer

    def rel(a, b):
        return max(abs(x - y) / max(abs(y), 1e-300) for x, y in zip(a, b))

    return {"values": values,
            "float64_rel_diff": rel(values["float64"]["obliviate"], values["float64"]["paper"]),
            "float32_rel_diff": rel(values["float32"]["obliviate"], values["float32"]["paper"]),
            "obliviate_float32_vs_float64": rel(values["float32"]["obliviate"], values["float64"]["obliviate"]),
            "paper_float32_vs_float64": rel(values["float32"]["paper"], values["float64"]["paper"])}


def _paper_optimizer(model, lr: float, weight_decay: float):
    """transformers' adamw_torch with its parameter groups: decay on everything but biases and norm weights."""
    import torch
    from transformers.trainer_pt_utils import get_parameter_names

    decay = set(get_parameter_names(model, [torch.nn.LayerNorm], ["bias", "layernorm", "rmsnorm", "norm"]))
    groups = [{"params": [p for n, p in model.named_parameters() if n in decay and p.requires_grad],
               "weight_decay": weight_decay},
              {"params": [p for n, p in model.named_parameters() if n not in decay and p.requires_grad],
               "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


# ---------------------------------------------------------------- rounds


def run_method(args, method: str) -> dict:
    import copy
    import tempfile

    import torch

    from obliviate.models import frozen_copy

    model, tokenizer, cfg, objective, dataset = _setup(args, method)
    start = copy.deepcopy(model.state_dict())
    pad_id = tokenizer.pad_token_id
    rounds = []
    for r in range(args.repeats):
        # Paper-style: the batches UnlearningDataset gives epoch by epoch (4 items: one step per epoch).
        model.load_state_dict(start)
        model.train()
        reference = frozen_copy(model) if method.startswith("NPO") else None
        optimizer = _paper_optimizer(model, cfg.train.learning_rate, cfg.train.weight_decay)
        paper_seconds, paper_cpu, paper_losses = [], [], []
        for step in range(args.steps):
            dataset.set_epoch(step)
            items = [dataset[i] for i in range(len(dataset))]
            t0, c0 = time.perf_counter(), time.process_time()
            paper_losses.append(_paper_step(method, model, reference, optimizer, items, pad_id,
                                            1e-12 if args.released_epsilon else 0.0))
            paper_seconds.append(time.perf_counter() - t0)
            paper_cpu.append(time.process_time() - c0)
        del reference, optimizer
        # obliviate: the trainer from the same weights.
        model.load_state_dict(start)
        dataset.set_epoch(0)
        dataset.ref_logps = {}
        with tempfile.TemporaryDirectory() as out:
            trainer, timer, ours = _obliviate_trainer(model, tokenizer, cfg, objective, dataset, out)
            trainer.train()
        del trainer
        steady = slice(1 if args.steps > 1 else 0, None)
        ratio = statistics.median(timer.seconds[steady]) / statistics.median(paper_seconds[steady])
        cpu_ratio = statistics.median(timer.cpu_seconds[steady]) / statistics.median(paper_cpu[steady])
        loss_rel = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(ours[0], paper_losses[0]))
        rounds.append({"paper_seconds": paper_seconds, "obliviate_seconds": timer.seconds, "ratio": ratio,
                       "paper_cpu_seconds": paper_cpu, "obliviate_cpu_seconds": timer.cpu_seconds,
                       "cpu_ratio": cpu_ratio, "load_average": list(os.getloadavg()),
                       "paper_losses": paper_losses, "obliviate_losses": ours, "first_step_loss_rel_diff": loss_rel})
        print(f"{method} round {r + 1}: paper-style {statistics.median(paper_seconds[steady]):6.2f} s/step, obliviate "
              f"{statistics.median(timer.seconds[steady]):5.2f} s/step, ratio {ratio:.3f} (CPU time {cpu_ratio:.3f}, "
              f"load {os.getloadavg()[0]:.1f}), first-step losses equal to "
              f"{loss_rel:.1e}", file=sys.stderr, flush=True)
    identity = None
    if not args.no_loss_check:
        identity = loss_identity(args, method, model, tokenizer, cfg, objective, dataset, start)
    if identity is not None:
        print(f"{method} first-step losses: float64 sides equal to {identity['float64_rel_diff']:.1e}, float32 sides "
              f"{identity['float32_rel_diff']:.1e} (float32 vs float64: obliviate "
              f"{identity['obliviate_float32_vs_float64']:.1e}, paper-style "
              f"{identity['paper_float32_vs_float64']:.1e})",
              file=sys.stderr, flush=True)
    return {"method": method, "rounds": rounds, "loss_identity": identity}


def peak_memory(args, method: str) -> dict:
    """obliviate's full fine-tuning alone in this process: the resident-set peak over --steps steps."""
    import tempfile

    model, tokenizer, cfg, objective, dataset = _setup(args, method)
    with tempfile.TemporaryDirectory() as out:
        trainer, timer, _ = _obliviate_trainer(model, tokenizer, cfg, objective, dataset, out)
        before = _status("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:      # "5": VmHWM := the current resident set
            f.write("5")
        trainer.train()
        peak = _status("VmHWM")
    return {"method": method, "rss_before_training": before, "peak_rss": peak, "seconds": timer.seconds,
            "allocator": current_allocator()}


def _child(cmd: list[str], env) -> dict:
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env=dict(env)).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/tofu", help="TOFU folder")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--steps", type=int, default=2, help="optimizer steps per side per round")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per method")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-only", action="store_true", help="only the peak-memory processes")
    parser.add_argument("--released-epsilon", action="store_true", help="ME with the released code's log(p + 1e-12)")
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="obliviate with train.gradient_checkpointing=true")
    parser.add_argument("--no-loss-check", action="store_true",
                        help="skip the first-step losses of both sides in float64 and float32")
    parser.add_argument("--child", choices=("time", "memory"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        fn = run_method if args.child == "time" else peak_memory
        print(json.dumps(fn(args, args.methods[0])))
        return
    results = {"steps": args.steps, "repeats": args.repeats, "threads": args.threads, "methods": {}}
    for method in args.methods:
        entry = {}
        for kind in (("memory",) if args.memory_only else ("time", "memory")):
            cmd = [sys.executable, __file__, "--child", kind, "--methods", method, "--data", args.data,
                   "--steps", str(args.steps), "--repeats", str(args.repeats), "--threads", str(args.threads)] + \
                (["--released-epsilon"] if args.released_epsilon else []) + \
                (["--gradient-checkpointing"] if args.gradient_checkpointing else []) + \
                (["--no-loss-check"] if args.no_loss_check else [])
            if kind == "time":
                entry[kind] = _child(cmd, os.environ)
                continue
            # obliviate's peak as the program runs (with the allocator it restarts itself with, if any), and in
            # this environment as it is
            program = preload_environment(os.environ)
            entry["memory"] = _child(cmd, program or os.environ)
            if program is not None:
                entry["memory_as_given"] = _child(cmd, os.environ)
        if "time" in entry:
            ratios = [r["ratio"] for r in entry["time"]["rounds"]]
            cpu_ratios = [r["cpu_ratio"] for r in entry["time"]["rounds"]]
            entry["ratio_median"] = statistics.median(ratios)
            entry["ratio_range"] = [min(ratios), max(ratios)]
            entry["cpu_ratio_median"] = statistics.median(cpu_ratios)
            entry["cpu_ratio_range"] = [min(cpu_ratios), max(cpu_ratios)]
            entry["loss_rel_diff_max"] = max(r["first_step_loss_rel_diff"] for r in entry["time"]["rounds"])
            identity = entry["time"]["loss_identity"]
            entry["loss_float64_rel_diff"] = identity["float64_rel_diff"] if identity else None
        mem = entry["memory"]
        print(f"{method}: " + (f"obliviate / paper-style step {entry['ratio_median']:.3f} (rounds "
                               f"{', '.join(f'{x:.3f}' for x in ratios)}; CPU time "
                               f"{', '.join(f'{x:.3f}' for x in cpu_ratios)}), losses equal to "
                               f"{entry['loss_rel_diff_max']:.1e}"
                               + (f" (float64: {entry['loss_float64_rel_diff']:.1e})"
                                  if entry["loss_float64_rel_diff"] is not None else "") + "; "
                               if "time" in entry else "")
              + f"peak RSS {mem['peak_rss'] / 1e9:.2f} GB ({mem['allocator']}"
              + (f"; {entry['memory_as_given']['allocator']}: {entry['memory_as_given']['peak_rss'] / 1e9:.2f} GB"
                 if "memory_as_given" in entry else "") + ")", flush=True)
        results["methods"][method] = entry
    print(json.dumps(results))


if __name__ == "__main__":
    main()

"""One grid point, trained: `train_run(spec, ...)` -> metrics dict (also written as metrics.json).

What the spec's recipe (plmscale.recipe) resolved is applied as given: AdamW (peak lr, β1, β2, weight
decay), linear warm-up then cosine to lr·min_lr_ratio over exactly this run's steps (or, in a WSD grid, a
trunk at constant lr and branches that decay from its checkpoints: plmscale.grid.wsd), gradient clipping,
bf16 autocast on CUDA (fp32 on CPU unless precision asks for bf16), gradient accumulation from
micro-batches to the configured batch.

Tokens. Batches are padded, one sequence per row (see sampler.py), or packed, several sequences per row
with document masking (train.packing; see packing.py), the same examples either way; D counts real tokens only (<pad>
excluded, <cls>/<eos> included; for MLM every real token processed, masked or not, as the paper). The step
count is fixed before training, from the configured D and the sampler's exact expected tokens per sequence,
so the schedule spans the run's own budget; metrics report the tokens actually processed (within a few
percent of D) and FLOPs computed from them.

A mixed run (objective mixed, plmscale.train.mixed) trains one model on CLM and MLM steps by a fixed
schedule, causal attention on CLM batches and bidirectional on MLM ones; tokens and FLOPs are counted as for
any run. It is validated on both objectives (valid_loss_by_objective; curve.csv's valid_loss_clm and
valid_loss_mlm); its valid_loss is their mix-weighted mean.

Weight decay applies to the block matrices only: not to norm weights (a scale, not a feature detector)
and not to the tied 33-token embedding (decay would shrink rarely sampled tokens' rows toward zero).
"""

import csv
import json
import logging
import math
import os
import shutil
import sysconfig
import time
from pathlib import Path

import torch

from plmscale.arithmetic import flops_per_token_6n, flops_per_token_chinchilla, flops_per_token_with_attention
from plmscale.data.atomic import write_text
from plmscale.errors import PlmscaleError, naming_the_file
from plmscale.grid import wsd as wsd_grid
from plmscale.grid.resources import GPU_PEAK_FLOPS  # matched against the CUDA device name; unknown: H100
from plmscale.grid.spec import RunSpec
from plmscale.model import build_model
from plmscale.provenance import config_hash, package_versions, provenance
from plmscale.run_metrics import RunMetrics, write_metrics
from plmscale.train import adamw
from plmscale.train import checkpoint as ckpt
from plmscale.train import distributed as distr
from plmscale.train import identity_eval
from plmscale.train import mixed as mixed_training
from plmscale.train.packing import empty_batch, micro_batches, resolve_packing
from plmscale.train.sampler import EVAL_STREAM, TRAIN_STREAM, SequenceSampler, framed_lengths, make_example
from plmscale.train.scalars import ScalarLog
from plmscale.train.schedule import lr_at, wsd_lr_at
from plmscale.train.subset import epochs, restricted_reader

log = logging.getLogger(__name__)

# CPU: per-thread peak guess for MFU (fp32; bf16 autocast counts 4x, as AMX/AVX512-BF16 machines measure).
# Only a scale for the MFU column.
CPU_PEAK_FLOPS_PER_THREAD = 1e11
# Between evaluations a run logs its progress at most this often (steps, loss, tokens/s), so a person or
# `plmscale status` can read how far a long run is; the environment variable overrides it (0: every step).
PROGRESS_EVERY_SECONDS = float(os.environ.get("PLMSCALE_PROGRESS_SECONDS", "30"))


def open_shards(where):
    """A ShardReader for a directory; an object with its attributes (tests) is used as it is."""
    if hasattr(where, "lengths"):
        return where
    from plmscale.data.shard_check import verify_shard_files
    from plmscale.data.shards import ShardReader
    reader = ShardReader(where)
    verify_shard_files(where, reader.manifest)  # sha256 and vocabulary, once per change of the files
    return reader


def peak_flops(device: torch.device, precision_bf16: bool, threads: int) -> float:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return next((value for key, value in GPU_PEAK_FLOPS.items() if key in name), GPU_PEAK_FLOPS["H100"])
    return CPU_PEAK_FLOPS_PER_THREAD * threads * (4 if precision_bf16 else 1)


def param_groups(model, weight_decay: float):
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (decay if param.ndim >= 2 and "embed" not in name else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_eval_set(sampler: SequenceSampler, objective: str, seed: int, eval_tokens: int, mask_prob: float,
                   micro: int, packed: bool = False, full_width: bool = False):
    """Fixed validation micro-batches: eval_tokens real tokens drawn once, the same for every run of a seed.

    If the validation split holds fewer tokens than asked, every sequence is used once instead.
    """
    reader = sampler.reader
    framed = framed_lengths(reader.lengths, sampler.seq_len)
    examples = []
    if framed.sum() <= eval_tokens:
        from plmscale.train.masking import causal_labels, mask_tokens
        from plmscale.train.sampler import example_rng, frame
        for i in range(len(reader)):
            rng = example_rng(seed, EVAL_STREAM, 1, i)  # step 1: apart from the sampled eval set
            tokens = frame(reader[i], sampler.seq_len, rng, sampler.crop_framing)
            examples.append(mask_tokens(tokens, rng, mask_prob) if objective == "mlm"
                            else (tokens, causal_labels(tokens)))
    else:
        total, i = 0, 0
        while total < eval_tokens:
            example = make_example(sampler, objective, seed, EVAL_STREAM, 0, i, mask_prob)
            examples.append(example)
            total, i = total + len(example[0]), i + 1
    examples.sort(key=lambda e: len(e[0]))  # similar lengths together: little padding
    return micro_batches(examples, micro, sampler.seq_len, packed, full_width)


class _Runner:
    """The mutable state of one run; set up in nanoGPT's order (device, data, model, optimizer), then the
    loop's steps as methods."""

    def __init__(self, spec: RunSpec, train_dir, valid_dir, out_dir, checkpoint_dir, threads, init_weights):
        self.spec, self.s = spec, spec.train
        self.run_id, self.objective, self.seed = spec.run_id, spec.objective, spec.seed
        self.mixed = spec.mixed  # a mixed run's {"mlm_fraction": f}; None for clm and mlm runs
        self.out_dir, self.checkpoint_dir = Path(out_dir), Path(checkpoint_dir)
        # Threads and packing are how a job runs, not what it computes (packing lays the same examples out
        # differently, same loss): a rerun on another machine resumes.
        self.hash = config_hash({k: v for k, v in spec.training_dict().items() if k not in ("threads", "packing")})
        self._setup_device(threads)
        self._setup_data(train_dir, valid_dir)
        resume = ckpt.load_resumable(self.checkpoint_dir, self.hash)
        if resume is not None and self.wsd_role == "trunk" and self._missing_branch_states(resume["step"]):
            log.warning("%s: a branch-point state before step %d is missing; training the trunk from scratch",
                        self.run_id, resume["step"])
            resume = None
        self._setup_model(init_weights if resume is None else None, transfer=resume is None)
        self._setup_optimizer()
        self.step, self.tokens, self.curve = 0, 0, []
        self.best_valid, self.last_valid, self.last_train = math.inf, None, None
        self.last_valid_by_objective = None  # a mixed run's last {objective: valid loss}
        self.wall_before, self.train_seconds = 0.0, 0.0
        self.trunk_wall_seconds = 0.0  # a WSD branch: the part of wall_seconds its trunk spent
        if resume is not None:
            self._restore(resume)
        elif self.wsd_role == "branch":
            self._start_branch()

    # ---- set-up --------------------------------------------------------------------------------------------
    def _setup_device(self, threads):
        s = self.s
        torch.set_num_threads(int(threads or s.threads))
        self.threads = torch.get_num_threads()
        self.ctx = distr.setup(s.device)
        self.strategy = s.strategy
        if self.strategy == "auto":  # the grid resolves auto; a bare spec under torchrun falls back to DDP
            self.strategy = "ddp" if self.ctx.distributed else "none"
        self.compiled = bool(s.compile) and self.strategy != "fsdp"  # FSDP's sharded model runs eagerly
        self.bf16 = s.precision == "bf16" or (s.precision == "auto" and self.ctx.device.type == "cuda")
        if self.ctx.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    def _setup_data(self, train_dir, valid_dir):
        """Samplers, the fixed validation set, and the batch geometry that fixes the number of steps."""
        s, spec = self.s, self.spec
        self.seq_len, self.micro = s.seq_len, s.micro_batch_size
        train_reader = open_shards(train_dir)
        if spec.subset is not None:  # the repetition study: whole clusters of one source, ~U tokens
            train_reader = restricted_reader(train_reader, spec.subset, where=str(train_dir))
        self.unique_tokens = train_reader.unique_tokens if spec.subset is not None else None
        self.sampler = SequenceSampler(train_reader, self.seq_len, spec.source_weights, s.by_cluster,
                                       where=str(train_dir), crop_framing=s.crop_framing)
        self.packed = resolve_packing(s.packing, self.ctx.device.type,
                                      mean_fill=self.sampler.mean_framed_length() / self.seq_len)
        valid_sampler = SequenceSampler(open_shards(valid_dir), self.seq_len, spec.source_weights, s.by_cluster,
                                        where=str(valid_dir), crop_framing=s.crop_framing)
        # Padded rows all seq_len wide when compiled: one shape, so one compiled graph (packing.micro_batches).
        self.full_width = self.compiled and not self.packed
        # One fixed validation set per objective evaluated (both for a mixed run), built as a single-objective
        # run of this seed builds its own.
        self.eval_sets = {objective: build_eval_set(valid_sampler, objective, self.seed, s.eval_tokens, s.mask_prob,
                                                    self.micro, self.packed, self.full_width)
                          for objective in mixed_training.evaluated_objectives(self.objective)}
        self.eval_batches = self.eval_sets.get(self.objective)
        # Final loss per identity-to-train bin when the identity table is there (identity_eval); a mixed run
        # has two losses per bin and reports none (its comparison is on the whole valid split).
        if self.mixed is not None:
            log.info("%s: a mixed run reports no loss per identity bin", self.run_id)
        self.identity_sets = None if self.mixed is not None else identity_eval.bin_eval_sets(
            valid_sampler.reader, valid_dir,
            lambda reader, where: SequenceSampler(reader, self.seq_len, spec.source_weights, s.by_cluster, where=where,
                                                  crop_framing=s.crop_framing),
            lambda sampler: build_eval_set(sampler, self.objective, self.seed, s.eval_tokens, s.mask_prob, self.micro,
                                            self.packed, self.full_width))
        # The global batch in sequences is world-independent when divisible.
        wanted = max(1, round(spec.batch_tokens / self.seq_len))
        self.accum = max(1, math.ceil(wanted / (self.micro * self.ctx.world)))
        self.global_seqs = self.accum * self.micro * self.ctx.world
        self.mean_len = self.sampler.mean_framed_length()
        self.target_tokens = spec.tokens
        self.total_steps = self._steps_for(self.target_tokens)
        self._setup_wsd()

    def _steps_for(self, tokens) -> int:
        return max(1, math.ceil(tokens / (self.global_seqs * self.mean_len)))

    def _setup_wsd(self):
        """A WSD trunk trains to its last branch point and saves its state at each; a branch runs its
        budget's steps and decays over the last ones (plmscale.grid.wsd.branch_points)."""
        self.wsd_role = self.spec.wsd_role
        self.save_at = {}  # trunk: step -> branch run ids whose decay starts there
        if self.wsd_role is None:
            return
        points = wsd_grid.branch_points(self.spec.wsd, self._steps_for, self.s.warmup_fraction,
                                        where=f"run {self.run_id}")
        self.warmup = points.warmup
        if self.wsd_role == "trunk":
            self.total_steps = self.decay_start = points.trunk_steps  # constant lr to the end
            for branch, step in points.decay_start.items():
                self.save_at.setdefault(step, []).append(branch)
        else:
            self.total_steps = points.total[self.run_id]
            self.decay_start = points.decay_start[self.run_id]
        self.trunk_dir = self.checkpoint_dir.parent / self.spec.wsd["trunk"]

    def _lr(self, step) -> float:
        if self.wsd_role is None:
            return lr_at(step, self.total_steps, self.peak_lr, self.s.warmup_fraction, self.s.min_lr_ratio)
        return wsd_lr_at(step, self.total_steps, self.decay_start, self.warmup, self.peak_lr, self.s.min_lr_ratio)

    # A trunk keeps its branch-point states in a private folder while it trains and moves them to the
    # declared outputs (branch_<run_id>.pt) at the end: Snakemake deletes the outputs of an interrupted
    # job, and the trunk's resume needs every state it has passed.
    def _private_branch_state(self, branch) -> Path:
        return self.checkpoint_dir / "branch_points" / wsd_grid.branch_checkpoint_name(branch)

    def _missing_branch_states(self, step) -> bool:
        return any(not self._private_branch_state(branch).exists()
                   for at, branches in self.save_at.items() if at <= step for branch in branches)

    def _start_branch(self):
        """A branch starts from its trunk's full state at its decay start (weights, optimizer, RNG, curve)."""
        source = self.trunk_dir / wsd_grid.branch_checkpoint_name(self.run_id)
        if not source.exists():
            raise PlmscaleError(f"{source}: the trunk's state at this branch's decay start is missing; train "
                                f"the trunk {self.spec.wsd['trunk']} first (Snakemake does: it is this job's input)")
        state = ckpt.load(source)
        if int(state["step"]) != self.decay_start:
            raise PlmscaleError(
                f"{source} is the trunk at step {state['step']}, but {self.run_id} decays from step "
                f"{self.decay_start}: the trunk was trained with other data or settings; retrain it")
        self._restore(state)
        self.trunk_wall_seconds = self.wall_before
        log.info("%s: branched from %s at step %d/%d; 1-sqrt decay over the last %d steps", self.run_id,
                 self.spec.wsd["trunk"], self.step, self.total_steps, self.total_steps - self.decay_start)

    def _setup_model(self, init_weights, transfer: bool):
        """The model, its FLOPs per token, and for a transfer run (not resuming) the source run's weights."""
        spec = self.spec
        self.shape = spec.model_shape
        torch.manual_seed(self.seed)  # same weights on every rank and in every rerun
        model = build_model(self.shape, max_len=self.seq_len).to(self.ctx.device)
        self.n_params = model.n_params(non_embedding=True)
        self.n_params_all = model.n_params(non_embedding=False)
        self.fpt_6n = flops_per_token_6n(self.n_params)
        self.fpt_attn = flops_per_token_with_attention(self.n_params, self.shape.layers, self.shape.d_model,
                                                       self.seq_len)
        self.fpt_chinchilla = flops_per_token_chinchilla(self.shape, self.seq_len)
        self.fpt_budget = {"6nd": self.fpt_6n, "with_attention": self.fpt_attn,
                           "chinchilla": self.fpt_chinchilla}[self.s.flops_definition]
        self.init_from = spec.init_from
        if transfer and self.init_from:
            source = Path(init_weights) if init_weights else self.checkpoint_dir.parent / self.init_from / ckpt.FINAL
            if not source.exists():
                raise PlmscaleError(f"{source}: final weights of source run {self.init_from} not found; train "
                                    f"that run first (its checkpoint directory must be kept for transfer)")
            model.load_state_dict(ckpt.load(source)["model"])
            log.info("initialised from %s (%s); optimizer and schedule start fresh", self.init_from, source)
        if self.compiled:
            if self.ctx.device.type == "cpu":
                check_cpu_compiler()
            model.compile()
        self.model = distr.wrap(model, self.strategy, self.ctx)
        # In the model's order, for clipping: walking the module tree every step costs ~2% of a tiny step.
        self.parameters = list(self.model.parameters())

    def _setup_optimizer(self):
        s = self.s
        self.peak_lr = self.spec.lr
        self.optimizer = make_optimizer(param_groups(self.model, s.weight_decay), self.peak_lr, (s.beta1, s.beta2),
                                        self.ctx, self.strategy)

    # ---- state -------------------------------------------------------------------------------------------
    def _restore(self, state):
        distr.load_full_state(self.model, state["model"], self.optimizer, state["optimizer"])
        ckpt.set_rng_state(state["rng"])
        self.step, self.tokens, self.curve = int(state["step"]), int(state["tokens"]), list(state["curve"])
        self.best_valid = float(state["best_valid"])
        self.last_valid = state["last_valid"]
        self.last_train = state["last_train"]
        self.wall_before, self.train_seconds = float(state["wall_seconds"]), float(state["train_seconds"])
        self.trunk_wall_seconds = float(state.get("trunk_wall_seconds", 0.0))
        self.last_valid_by_objective = state.get("last_valid_by_objective")
        # The sampler's counts go on from the checkpoint, so metrics.json does not depend on a restart.
        self.sampler.n_drawn = int(state.get("sampled_sequences", 0))
        self.sampler.n_cropped = int(state.get("cropped_sequences", 0))
        log.info("resumed %s at step %d/%d (%d tokens)", self.run_id, self.step, self.total_steps, self.tokens)

    def _checkpoint(self, started, paths=None):
        """The full state to last.pt (or to `paths`: a WSD trunk's branch points)."""
        model_state, optim_state = distr.full_state(self.model, self.optimizer)  # collective under FSDP
        if self.ctx.is_main:
            state = {"format_version": ckpt.FORMAT_VERSION, "run_id": self.run_id, "config_hash": self.hash,
                     "step": self.step, "tokens": self.tokens, "total_steps": self.total_steps,
                     "model": model_state, "optimizer": optim_state, "rng": ckpt.rng_state(),
                     "curve": self.curve, "best_valid": self.best_valid, "last_valid": self.last_valid,
                     "last_train": self.last_train, "wall_seconds": self.wall_before + time.time() - started,
                     "train_seconds": self.train_seconds, "world_size": self.ctx.world,
                     "trunk_wall_seconds": self.trunk_wall_seconds,
                     "sampled_sequences": self.sampler.n_drawn, "cropped_sequences": self.sampler.n_cropped}
            if self.mixed is not None:
                state["last_valid_by_objective"] = self.last_valid_by_objective
            for path in paths or [self.checkpoint_dir / ckpt.LAST]:
                path.parent.mkdir(parents=True, exist_ok=True)
                ckpt.save(state, path)
        distr.barrier(self.ctx)

    # ---- one step ------------------------------------------------------------------------------------------
    def _autocast(self):
        return torch.autocast(self.ctx.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def step_objective(self, step) -> str:
        """The objective optimizer step `step` trains: the run's own, or a mixed run's scheduled kind."""
        if self.mixed is None:
            return self.objective
        return mixed_training.step_objective(step, self.mixed["mlm_fraction"])

    def _micro_batches(self, step):
        """This rank's slice of the global batch of `step`, as micro-batches (accum of them when padded; as
        many as the packed rows need when packed)."""
        s = self.s
        per_rank = self.accum * self.micro
        first = self.ctx.rank * per_rank
        objective = self.step_objective(step)
        examples = [make_example(self.sampler, objective, self.seed, TRAIN_STREAM, step, first + i,
                                 s.mask_prob) for i in range(per_rank)]
        return micro_batches(examples, self.micro, self.seq_len, self.packed, self.full_width)

    def _forward(self, batch, objective):
        """(logits, summed loss) of one micro-batch already on the device, as `objective` (clm: causal
        attention; mlm: bidirectional)."""
        with self._autocast():
            return self.model(batch.tokens, causal=objective == "clm", **batch.model_kwargs())

    def _train_step(self):
        objective = self.step_objective(self.step)
        batches = self._micro_batches(self.step)
        device = self.ctx.device
        # Packed ranks may need different numbers of micro-batches; every rank runs the most (topped up with
        # empty ones), since FSDP's forward and the gradient sync are collectives.
        per_rank_batches = torch.zeros(self.ctx.world, dtype=torch.float64)
        per_rank_batches[self.ctx.rank] = len(batches)
        counts = torch.cat([torch.tensor([float(sum(b.n_labels for b in batches)),
                                          float(sum(b.n_real_tokens for b in batches))], dtype=torch.float64),
                            per_rank_batches])
        n_labels, n_tokens, *rank_batches = distr.all_reduce_sum(counts, self.ctx).tolist()
        batches += [empty_batch(self.seq_len) for _ in range(int(max(rank_batches)) - len(batches))]
        lr = self._lr(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), dtype=torch.float64)
        # Each rank divides by the GLOBAL label count; gradient averaging over ranks then multiplies by
        # 1/world, so scale by world: the result is the token-weighted mean over the whole global batch.
        scale = self.ctx.world / max(n_labels, 1.0)
        for i, batch in enumerate(batches):
            with distr.sync_gradients(self.model, enabled=i == len(batches) - 1):
                _, loss = self._forward(batch.to(device, non_blocking=True), objective)
                (loss * scale).backward()
            loss_sum += loss.detach().double().cpu()
        loss_total = distr.all_reduce_sum(loss_sum.reshape(1), self.ctx).item()
        train_loss = loss_total / max(n_labels, 1.0)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.parameters, self.s.grad_clip or float("inf"))
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        if not math.isfinite(train_loss) or not math.isfinite(float(grad_norm)):
            last = self.checkpoint_dir / ckpt.LAST
            kept = f"the last good checkpoint {last} is kept" if last.exists() else "no checkpoint was written yet"
            raise PlmscaleError(
                f"run {self.run_id}: non-finite {'loss' if not math.isfinite(train_loss) else 'gradient norm'} "
                f"at step {self.step + 1} of {self.total_steps} (lr {lr:.3g}); {kept}. Lower the learning rate "
                f"(train.lr), or use precision fp32, then rerun")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens += int(n_tokens)
        self.last_train = train_loss
        return train_loss, lr

    @torch.no_grad()
    def evaluate(self, batches=None, objective=None) -> float:
        """Mean validation loss per label over `batches` (default: the run's own validation set), run as
        `objective` (default: the run's; a mixed run names one)."""
        self.model.eval()
        totals = torch.zeros(2, dtype=torch.float64)
        batches = self.eval_batches if batches is None else batches
        objective = objective or self.objective
        # FSDP needs every rank in every forward; pad the shards with a repeat whose sum is dropped.
        n_rounds = math.ceil(len(batches) / self.ctx.world)
        for r in range(n_rounds):
            index = r * self.ctx.world + self.ctx.rank
            batch = batches[min(index, len(batches) - 1)].to(self.ctx.device)
            _, loss = self._forward(batch, objective)
            if index < len(batches):
                totals += torch.tensor([float(loss), float(batch.n_labels)], dtype=torch.float64)
        totals = distr.all_reduce_sum(totals, self.ctx).cpu()
        self.model.train()
        return float(totals[0] / max(float(totals[1]), 1.0))

    # ---- the run -------------------------------------------------------------------------------------------
    def run(self, stop_after_steps=None) -> dict | None:
        started = time.time()
        self.peak_flops_total = peak_flops(self.ctx.device, self.bf16, self.threads) * self.ctx.world
        log.info("%s: %s, %d non-embedding params, %d steps of %d sequences (%d x %d micro-batches x %d ranks), "
                 "peak lr %.3g, %s on %s", self.run_id, self.shape.to_dict(), self.n_params, self.total_steps,
                 self.global_seqs, self.accum, self.micro, self.ctx.world, self.peak_lr,
                 "bf16 autocast" if self.bf16 else "fp32", self.ctx.device)
        self.model.train()
        scalars = ScalarLog(self.out_dir, resume_step=self.step) if self.ctx.is_main else None
        pace = {"since": time.time(), "tokens": self.tokens}
        try:
            return self._steps(started, stop_after_steps, scalars, pace)
        finally:
            if scalars is not None:
                scalars.close()

    def _steps(self, started, stop_after_steps, scalars, pace) -> dict | None:
        every_eval, every_ckpt = self.s.eval_every_steps, self.s.checkpoint_every_steps
        while self.step < self.total_steps:
            step_started = time.time()
            try:
                train_loss, lr = self._train_step()
            except torch.OutOfMemoryError as error:
                raise PlmscaleError(
                    f"run {self.run_id}: out of GPU memory at step {self.step + 1} (micro_batch_size "
                    f"{self.micro}, seq_len {self.seq_len}, strategy {self.strategy}). Lower train."
                    f"micro_batch_size (gradient accumulation keeps the batch), or use distributed.strategy "
                    f"fsdp / more GPUs; seq_len changes the study") from error
            self.train_seconds += time.time() - step_started
            valid = by_objective = None
            if self.step % every_eval == 0 or self.step == self.total_steps or self.step in self.save_at:
                valid, by_objective = self._validate()
                self.last_valid, self.best_valid = valid, min(self.best_valid, valid)
                log.info("step %d/%d tokens %d train %.4f valid %.4f lr %.3g%s", self.step, self.total_steps,
                         self.tokens, train_loss, valid, lr,
                         "" if by_objective is None else f" (clm {by_objective['clm']:.4f}, mlm {by_objective['mlm']:.4f})")
            self._report(scalars, pace, train_loss, valid, lr)
            row = [self.step, self.tokens, self.tokens * self.fpt_budget, train_loss, valid, lr]
            if self.mixed is not None:  # the objective this step trained, and both validation losses
                row += [self.step_objective(self.step - 1), *(None if by_objective is None else by_objective[o]
                                                              for o in mixed_training.SINGLE_OBJECTIVES)]
            self.curve.append(row)
            if self.step in self.save_at:  # a WSD trunk at a branch's decay start
                self._checkpoint(started, [self._private_branch_state(b) for b in self.save_at[self.step]])
            if self.step % every_ckpt == 0 and self.step < self.total_steps:
                self._checkpoint(started)
            if stop_after_steps is not None and self.step >= stop_after_steps and self.step < self.total_steps:
                return None  # as if killed right here (tests)
        return self._finish(started)

    def _validate(self):
        """(validation loss, None), or for a mixed run (mix-weighted loss, {objective: loss})."""
        if self.mixed is None:
            return self.evaluate(), None
        losses = {objective: self.evaluate(batches, objective) for objective, batches in self.eval_sets.items()}
        self.last_valid_by_objective = losses
        return mixed_training.mixed_loss(losses, self.mixed["mlm_fraction"]), losses

    def _report(self, scalars, pace, train_loss, valid, lr) -> None:
        """A progress line every PROGRESS_EVERY_SECONDS between evaluations (steps, loss, tokens/s), and the
        step's TensorBoard scalars: the losses and lr at each evaluation, the pace at each progress tick."""
        now = time.time()
        due = now - pace["since"] >= PROGRESS_EVERY_SECONDS
        speed = (self.tokens - pace["tokens"]) / max(now - pace["since"], 1e-9) if due else None
        if due and valid is None:
            log.info("step %d/%d tokens %d train %.4f lr %.3g, %.3g tokens/s", self.step, self.total_steps,
                     self.tokens, train_loss, lr, speed)
        if scalars is not None and (due or valid is not None):
            mfu = None if speed is None else speed * self.fpt_attn / max(self.peak_flops_total, 1.0)
            scalars.write(self.step, self.tokens * self.fpt_budget, train_loss=train_loss, valid_loss=valid, lr=lr,
                          tokens_per_second=speed, mfu=mfu)
        if due:
            pace["since"], pace["tokens"] = now, self.tokens

    def _finish(self, started) -> dict:
        model_state, _ = distr.full_state(self.model)
        metrics = self._metrics(self.wall_before + time.time() - started)  # every rank evaluates the bins
        if self.ctx.is_main:
            self._write_outputs(metrics, model_state)
        distr.barrier(self.ctx)
        return metrics.to_dict()

    def _metrics(self, wall: float) -> RunMetrics:
        """The finished run's record (plmscale.run_metrics): what it trained, to what loss, at what speed."""
        achieved = self.tokens * self.fpt_attn / max(self.train_seconds, 1e-9)
        peak = peak_flops(self.ctx.device, self.bf16, self.threads) * self.ctx.world
        optional = identity_eval.evaluate_bins(self.identity_sets, self.evaluate)
        if self.unique_tokens is not None:  # repeated data: D / U is the epoch count
            optional.update({"subset": self.spec.subset, "unique_tokens": self.unique_tokens,
                             "epochs": epochs(self.tokens, self.unique_tokens)})
        if self.wsd_role:
            optional["wsd"] = {"role": self.wsd_role, "trunk": self.spec.wsd["trunk"], "warmup_steps": self.warmup,
                               "decay_start_step": self.decay_start, "decay_fraction": self.spec.wsd["decay_fraction"],
                               "trunk_wall_seconds": self.trunk_wall_seconds,
                               "own_wall_seconds": wall - self.trunk_wall_seconds}
        if self.mixed is not None:
            n_mlm = mixed_training.mlm_steps(self.step, self.mixed["mlm_fraction"])
            optional["mixed"] = {**self.mixed, "mlm_steps": n_mlm, "clm_steps": self.step - n_mlm}
            optional["valid_loss_by_objective"] = self.last_valid_by_objective
        return RunMetrics(
            run_id=self.run_id, objective=self.objective, model=self.spec.model,
            shape=self.shape.to_dict(), n_params=self.n_params, n_params_with_embeddings=self.n_params_all,
            tokens=self.tokens, target_tokens=self.target_tokens,
            flops=self.tokens * self.fpt_budget, flops_definition=self.s.flops_definition,
            flops_6nd=self.tokens * self.fpt_6n, flops_with_attention=self.tokens * self.fpt_attn,
            flops_chinchilla=self.tokens * self.fpt_chinchilla,
            budget=self.spec.budget,
            final_valid_loss=self.last_valid, best_valid_loss=self.best_valid, train_loss=self.last_train,
            steps=self.step, batch_sequences=self.global_seqs, seq_len=self.seq_len,
            peak_lr=self.peak_lr, wall_seconds=wall,
            tokens_per_second=self.tokens / max(self.train_seconds, 1e-9),
            achieved_flops_per_second=achieved, peak_flops_per_second=peak, mfu=achieved / peak,
            device=str(self.ctx.device.type), world_size=self.ctx.world, strategy=self.strategy,
            precision="bf16" if self.bf16 else "fp32", packing=self.packed, config_hash=self.hash,
            versions=package_versions(), init_from=self.init_from, seed=self.seed,
            cropped_sequences=self.sampler.n_cropped,  # long proteins cut to a random seq_len window
            recipe=self.spec.recipe["name"], recipe_sha256=self.spec.recipe["sha256"],
            schedule="wsd" if self.wsd_role else "cosine", **optional)

    def _write_outputs(self, metrics: RunMetrics, model_state) -> None:
        """The final weights, then curve.csv, provenance.json and metrics.json (last: the workflow's sign that
        the run is complete); a write that fails names its file."""
        if self.wsd_role == "trunk":  # the branch points become the declared outputs
            for branches in self.save_at.values():
                for branch in branches:
                    target = self.checkpoint_dir / wsd_grid.branch_checkpoint_name(branch)
                    with naming_the_file(target, "branch checkpoint"):
                        self._private_branch_state(branch).replace(target)
        else:  # a trunk's final weights are its last branch point's
            ckpt.save({"run_id": self.run_id, "shape": self.shape.to_dict(), "model": model_state},
                      self.checkpoint_dir / ckpt.FINAL)
        with naming_the_file(self.out_dir, "run directory"):
            self.out_dir.mkdir(parents=True, exist_ok=True)
        curve_path = self.out_dir / "curve.csv"
        with naming_the_file(curve_path, "training curve"), write_text(curve_path) as handle:
            writer = csv.writer(handle, lineterminator="\n")
            header = ["step", "tokens", "flops", "train_loss", "valid_loss", "lr"]
            # A mixed run: the objective each step trained (its train_loss is that objective's) and the
            # validation loss on each objective.
            writer.writerow(header + (["step_objective", "valid_loss_clm", "valid_loss_mlm"] if self.mixed else []))
            for step, tokens, flops, train, valid, lr, *mixed_columns in self.curve:
                writer.writerow([step, tokens, repr(float(flops)), repr(train),
                                 "" if valid is None else repr(valid), repr(lr)]
                                + ["" if value is None else value if isinstance(value, str) else repr(value)
                                   for value in mixed_columns])
        provenance_path = self.out_dir / "provenance.json"
        with naming_the_file(provenance_path, "run provenance"), write_text(provenance_path) as handle:
            json.dump(provenance({"run_id": self.run_id, "config_hash": self.hash, "seed": self.seed,
                                  "recipe": self.spec.recipe,
                                  "effective_source_mix": self.sampler.effective_mix,
                                  "sampler": "per-example numpy Generator seeded by (seed, stream, step, index)",
                                  "spec": self.spec.to_dict()}), handle, indent=2, default=str)
        write_metrics(self.out_dir / "metrics.json", metrics)
        last = self.checkpoint_dir / ckpt.LAST
        if last.exists():  # outputs are complete: the rolling checkpoint has done its job
            last.unlink()


def check_cpu_compiler():
    """torch.compile on CPU builds C++ kernels with the system compiler against Python's headers; without
    them a run fails at its first step with a long inductor traceback, so say what is missing up front."""
    compiler = os.environ.get("CXX") or "g++"  # what inductor looks for on Linux
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    missing = []
    if shutil.which(compiler) is None:
        missing.append(f"a C++ compiler ('{compiler}' is not on PATH; Debian: apt-get install g++, or set CXX)")
    if not headers.exists():
        missing.append(f"Python's headers ({headers}; Debian: apt-get install python3-dev)")
    if missing:
        raise PlmscaleError("train.compile is true, and torch.compile builds C++ kernels on CPU, but this machine "
                            f"lacks {' and '.join(missing)}: install them, or set train.compile: false")


def optimizer_kernel(device: torch.device, strategy: str) -> dict:
    """torch.optim.AdamW's implementation: fused on CPU (one kernel over all tensors instead of ~0.5 ms of
    per-tensor Python: a demo model's whole step is 1.06-1.11x faster, docs/benchmarks.md), foreach on CUDA.
    FSDP's sharded DTensor parameters keep the foreach/for-loop path the fused CPU kernel does not take."""
    if device.type == "cpu" and strategy != "fsdp":
        return {"fused": True}
    return {"foreach": device.type == "cuda" or None}


def make_optimizer(groups, lr: float, betas: tuple, ctx: distr.DistContext, strategy: str):
    """AdamW. One process on the CPU: the same fused kernel without torch.optim (plmscale.train.adamw: no
    torch._dynamo import, less Python per step; the same numbers); otherwise torch.optim.AdamW."""
    if ctx.device.type == "cpu" and not ctx.distributed and adamw.available():
        return adamw.FusedAdamW(groups, lr=lr, betas=betas)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, **optimizer_kernel(ctx.device, strategy))


def train_run(spec: RunSpec | dict, train_dir, valid_dir, out_dir, checkpoint_dir, threads: int | None = None, *,
              init_weights=None, stop_after_steps: int | None = None) -> dict | None:
    """Train one grid point; resume from checkpoint_dir/last.pt when a previous attempt left one.

    spec: a plmscale.grid.RunSpec, or its flat JSON form (RunSpec.from_dict fills schema defaults).
    train_dir/valid_dir: shard directories (or ShardReader-like objects).
    Writes out_dir/{metrics.json, curve.csv, provenance.json} and checkpoint_dir/final.pt; returns metrics.
    stop_after_steps (tests): return None after that many steps, as a killed job would stop.
    """
    spec = spec if isinstance(spec, RunSpec) else RunSpec.from_dict(spec)
    try:
        runner = _Runner(spec, train_dir, valid_dir, out_dir, checkpoint_dir, threads, init_weights)
        return runner.run(stop_after_steps)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

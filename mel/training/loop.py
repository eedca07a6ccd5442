"""`mel train`: the rounds (thesis 5.2, docs/method.md).

Each round: (1) embed the KB with the current model and build an index;
(2) embed the round's training mentions, retrieve k nearest entities, sample
`neg` hard negatives; (3) train on batches of b mentions × (1 + neg) entities
with the in-batch softmax and Adam; (4) evaluate R@1/R@10 on the held-out set
with a freshly built index; (5) checkpoint. At the end the weights are exported
with the same ONNX builder as `mel model export`.

Run folder:
    run.json         settings, command, tool versions
    train-log.jsonl  the log (see report.py)
    checkpoint/      a Hugging Face-style checkpoint plus trainer state (checkpoints.py)
    model/           the final mel model folder (ONNX)
    work/            tokenised KB, round data, indexes (removed at the end unless --keep-work)
"""

from __future__ import annotations

import datetime as _dt
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mel.artifacts import command_line, read_json, tool_versions, write_json
from mel.errors import InputError
from mel.exporters.model_folder import write_model_folder
from mel.indexes.searcher import Index
from mel.models import MANIFEST_NAME
from mel.skips import SkipReport
from mel.training.batches import RoundBatches
from mel.training.checkpoints import (
    TrainerState,
    find_checkpoint,
    load_optimizer,
    load_rng_states,
    read_state,
    save_checkpoint,
)
from mel.training.distributed import World, end_world, start_world
from mel.training.evaluation import HeldOut, TrainingRanker, read_held_out, round_recall
from mel.training.kb_index import build_kb_index, index_folder, remove_index
from mel.training.kb_store import KBStore, build_kb_store
from mel.training.loss import in_batch_loss
from mel.training.mining import MiningStats, NegativeMiner
from mel.training.progress import TrainProgress
from mel.training.report import LOG_NAME, TrainLog
from mel.training.round_data import MentionStream, RoundData, build_round_data, mention_sources
from mel.training.settings import TrainSettings
from mel.training.source import load_source
from mel.training.torch_model import autocast, embed_tokens, encoder_from_weights, weights_from_encoder

RUN_FORMAT = "mel.train.run.v1"


@dataclass
class TrainResult:
    run: Path
    model: Path
    checkpoint: Path
    history: list[dict]
    notes: list[str] = field(default_factory=list)
    rank: int = 0


def train(settings: TrainSettings, *, progress: TrainProgress | None = None,
          on_step: Callable[[int, int, int], None] | None = None) -> TrainResult:
    """Run (or resume) the training rounds, reporting through `progress`;
    `on_step(round, step, global_step)` is called after every optimizer step
    (tests use it to interrupt a run)."""
    world = start_world(settings.device)
    try:
        return Trainer(settings, world, progress or TrainProgress(), on_step).run()
    finally:
        end_world(world)


class Trainer:
    def __init__(self, settings: TrainSettings, world: World, progress: TrainProgress, on_step):
        self.settings = settings
        self.world = world
        self.device = world.device
        self.on_step = on_step
        self.run_dir = settings.out
        self.work = self.run_dir / "work"
        self.checkpoint_dir = self.run_dir / "checkpoint"
        # Only the main process reports; the others would repeat it.
        self.progress = progress if world.is_main else TrainProgress()
        self.log = TrainLog(self.run_dir / LOG_NAME, enabled=world.is_main)
        self.notes: list[str] = []
        self.kb_report = SkipReport()
        self.links_report = SkipReport()
        self._clock: tuple[float, float] | None = None  # (round seconds before this process, its start)

    # -- helpers ---------------------------------------------------------------

    def say(self, message: str) -> None:
        self.progress.message(message)

    def task(self, description: str, total: int | None) -> Callable[[int], None]:
        """Report the next phase; returns its advance(n)."""
        return self.progress.phase(description, total)

    def embed(self, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return embed_tokens(self.model, tokens, lengths.astype(np.int64), self.pad_id, self.device,
                            self.settings.encode_batch_size)

    # -- setup -----------------------------------------------------------------

    def _prepare_folder(self) -> Path | None:
        """Create or check the run folder; the checkpoint to resume from, if any."""
        s, run_json = self.settings, self.run_dir / "run.json"
        checkpoint = find_checkpoint(self.run_dir) if run_json.is_file() else None
        if checkpoint is not None and s.resume:
            changed = s.differences(TrainSettings.from_json(read_json(run_json)["settings"]))
            if changed:
                raise InputError(f"{self.run_dir}: --resume with different options ({', '.join(changed)}); give "
                                 "the original ones, or start a new run with another -o")
            return checkpoint
        ours_unstarted = run_json.is_file() and checkpoint is None  # a run stopped before its first checkpoint
        if self.run_dir.exists() and any(self.run_dir.iterdir()) and not (s.force or ours_unstarted):
            raise InputError(f"{self.run_dir} already exists (use --resume to continue it, or --force to start over)")
        if s.resume:
            self.notes.append(f"{self.run_dir}: no checkpoint to resume from; starting from the beginning")
        self.world.barrier()  # every rank has looked before rank 0 clears the folder
        if self.world.is_main:
            if self.run_dir.exists():
                for child in self.run_dir.iterdir():
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_json(run_json, {
                "format": RUN_FORMAT, "settings": s.to_json(), "world_size": self.world.size,
                "command": command_line(), "tools": tool_versions(),
                "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            })
        self.world.barrier()
        return None

    def _load_model(self, checkpoint: Path | None) -> None:
        s = self.settings
        source = load_source(str(checkpoint) if checkpoint else s.model, s.pooling, s.max_length)
        if checkpoint is not None:
            source.name = read_json(checkpoint / MANIFEST_NAME).get("source", s.model)
        self.source = source
        self.pad_id = source.manifest(s.max_length).special_ids["pad"]
        self.tokens = source.mention_tokenizer(s.max_length)
        model = encoder_from_weights(source.weights, source.pooling, s.dropout)
        self.model = model.to(self.device)
        self.names = [n for n, p in self.model.bert.named_parameters() if p.requires_grad]
        parameters = dict(self.model.bert.named_parameters())
        self.optimizer = torch.optim.Adam([parameters[n] for n in self.names], lr=s.lr, betas=(0.9, 0.999))
        self.scaler = None
        if self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            self.scaler = torch.amp.GradScaler("cuda")
        self.trained: torch.nn.Module = self.model
        if self.world.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.trained = DistributedDataParallel(self.model, device_ids=ids)

    def _restore(self, checkpoint: Path | None) -> TrainerState:
        s = self.settings
        if checkpoint is None:
            torch.manual_seed(s.seed * 1000 + self.world.rank)
            return TrainerState(world_size=self.world.size)
        state = read_state(checkpoint)
        if state.world_size != self.world.size:
            raise InputError(f"{checkpoint}: written by {state.world_size} process(es); resume with the same number")
        load_optimizer(checkpoint, self.optimizer, self.names)
        rng = load_rng_states(checkpoint)
        torch.set_rng_state(torch.from_numpy(rng[f"cpu.{self.world.rank}"].copy()))
        if self.device.type == "cuda" and f"cuda.{self.world.rank}" in rng:
            torch.cuda.set_rng_state(torch.from_numpy(rng[f"cuda.{self.world.rank}"].copy()), self.device)
        if self.scaler is not None and state.scaler:
            self.scaler.load_state_dict(state.scaler)
        self.log.truncate_after(state.global_step, state.round)
        self.say(f"Resuming {self.run_dir} at round {state.round + 1}, step {state.step:,}")
        return state

    def _kb(self) -> KBStore:
        folder = self.work / "kb"
        if self.world.is_main and not (folder / "kb.json").is_file():
            count = self.task("tokenising the KB", None)
            build_kb_store(folder, self.settings.kb, self.tokens, langs=self.settings.langs,
                           report=self.kb_report, progress=count)
        self.world.barrier()
        return KBStore.open(folder)

    # -- one round -------------------------------------------------------------

    def _evaluate(self, version: int) -> dict | None:
        result = None
        if self.held_out is not None and self.world.is_main:
            ranker = TrainingRanker(self.tokens, self.embed, Index(index_folder(self.work, version)))
            result = round_recall(self.held_out, ranker)
        self.world.barrier()
        return result

    def _index(self, version: int) -> Path:
        return build_kb_index(self.work, version, self.kb, self.world, self.embed,
                              dim=self.model.bert.config.hidden_size,
                              extra={"model": {"name": f"mel train: {self.source.name}, model version {version}"},
                                     "query_encoding": "context"},
                              progress=self.task)

    def _round_data(self, r: int, state: TrainerState) -> RoundData:
        s, world = self.settings, self.world
        folder = self.work / f"round-{r + 1:02d}" / f"rank-{world.rank}"
        fresh = not RoundData.is_done(folder)
        if fresh and state.step > 0:
            self.notes.append(f"{folder}: round data missing mid-round; mined again with the current model, so "
                              "this run will differ from an uninterrupted one")
        if world.mean(1.0 if fresh else 0.0) > 0:  # some rank must mine: all take part in the index build
            index = Index(self._index(r))
            if fresh:
                miner = NegativeMiner(index, s.negatives, s.k, all_qids=self.kb.unique_qids)
                need = s.steps_in_round(r) * s.batch_size * world.size
                build_round_data(
                    folder, self.stream, start=state.cursor, count=need, rank=world.rank, world=world.size,
                    tokens=self.tokens, embed=self.embed, miner=miner,
                    rng=np.random.default_rng([s.seed, r, world.rank, 1]),
                    query_kind=s.first_round_negatives if r == 0 else "context",
                    progress=self.task(f"round {r + 1}/{s.rounds}: mining negatives", need // world.size))
            world.barrier()
            if not s.keep_work:
                remove_index(self.work, r, world)
        data = RoundData.open(folder)
        mine = MiningStats.from_json(data.info["mining"])
        sums = world.total([mine.mentions, mine.grown, mine.searches, mine.hard_rank_sum, mine.gold_in_top_k])
        widest = world.total([float(mine.max_k) if rank == world.rank else 0.0 for rank in range(world.size)])
        mining = MiningStats(mentions=int(sums[0]), grown=int(sums[1]), max_k=int(max(widest)), searches=int(sums[2]),
                             hard_rank_sum=sums[3], gold_in_top_k=int(sums[4]))
        data.info["mining"] = mining.to_json()  # all ranks together
        if fresh or state.step == 0:  # (a resumed run's log lost this record only at the round's start)
            self.log.write("mining", round=r + 1, global_step=state.global_step, query_kind=data.info["query_kind"],
                           rejected=data.info.get("rejected"), **mining.to_json())
        return data

    def _checkpoint(self, state: TrainerState) -> None:
        rng = {f"cpu.{rank}": array
               for rank, array in enumerate(self.world.gather_bytes(torch.get_rng_state().numpy()))}
        if self.device.type == "cuda":
            states = self.world.gather_bytes(torch.cuda.get_rng_state(self.device).numpy())
            rng.update({f"cuda.{rank}": array for rank, array in enumerate(states)})
        state.scaler = self.scaler.state_dict() if self.scaler is not None else None
        if self._clock is not None:  # time spent in the current round, across resumes
            state.seconds = self._clock[0] + time.monotonic() - self._clock[1]
        if self.world.is_main:
            save_checkpoint(self.checkpoint_dir, model=self.model, tokenizer=self.source.tokenizer,
                            pooling=self.source.pooling, prefixes=self.source.prefixes,
                            max_length=self.settings.max_length, source=self.source.name,
                            optimizer=self.optimizer, parameter_names=self.names, state=state, rng_states=rng)
        self.world.barrier()

    def _flush_loss(self, state: TrainerState, window: list[torch.Tensor]) -> float | None:
        """Average the window's losses over the ranks and add them to the round's tally."""
        if not window:
            return None
        mean = self.world.mean(float(torch.stack(window).double().mean()))  # one device sync per window
        state.loss_sum += mean * len(window)
        state.loss_steps += len(window)
        if state.loss_first is None:
            state.loss_first = mean
        state.loss_last = mean
        window.clear()
        return mean

    def _train_round(self, r: int, state: TrainerState, data: RoundData) -> None:
        s = self.settings
        steps = s.steps_in_round(r)
        batches = RoundBatches(data, self.kb, batch_size=s.batch_size, seed=s.seed, round_index=r,
                               rank=self.world.rank, pad_id=self.pad_id, device=self.device)
        self.trained.train()
        advance = self.task(f"round {r + 1}/{s.rounds}: training", steps)
        advance(state.step)
        window: list[torch.Tensor] = []
        tick = time.monotonic()
        for step in range(state.step, steps):
            for group in self.optimizer.param_groups:
                group["lr"] = s.lr_at(r, step)
            batch = batches.batch(step)
            with autocast(self.device):
                vectors = self.trained(batch.ids, batch.mask)
            loss, _ = in_batch_loss(vectors[: batch.mentions], vectors[batch.mentions:], s.logit_multiplier,
                                    batch.gold_qids, batch.column_qids)
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                self.optimizer.step()
            window.append(loss.detach())
            state.step, state.global_step = step + 1, state.global_step + 1
            advance(1)
            done = state.step == steps
            if state.step % s.log_every == 0 or done or state.step % s.checkpoint_every == 0:
                count = len(window)
                mean = self._flush_loss(state, window)
                elapsed = time.monotonic() - tick
                tick = time.monotonic()
                self.log.write("steps", round=r + 1, step=state.step, global_step=state.global_step, loss=mean,
                               lr=s.lr_at(r, step), steps_per_s=round(count / max(elapsed, 1e-9), 4),
                               samples_per_s=round(count * s.batch_size * self.world.size / max(elapsed, 1e-9), 2))
            if state.step % s.checkpoint_every == 0 or done:
                self._checkpoint(state)
            if self.on_step is not None:
                self.on_step(r, state.step, state.global_step)

    def _finish_round(self, r: int, state: TrainerState, data: RoundData) -> None:
        s = self.settings
        last = r + 1 == s.rounds
        evaluation = None
        if s.eval_spec is not None or not last:
            self._index(r + 1)  # the trained model's index: for evaluation and the next round's mining
            evaluation = self._evaluate(r + 1)
        assert self._clock is not None  # set when the round started
        seconds = self._clock[0] + time.monotonic() - self._clock[1]
        record = {
            "round": r + 1, "steps": s.steps_in_round(r), "global_step": state.global_step,
            "loss": state.loss_sum / max(1, state.loss_steps), "loss_first": state.loss_first,
            "loss_last": state.loss_last, "mentions": data.info["mining"]["mentions"],
            "mining": data.info["mining"], "eval": evaluation, "seconds": round(seconds, 2),
        }
        state.history.append(record)
        state.round, state.step, state.cursor = r + 1, 0, int(data.info["cursor"])
        state.loss_sum, state.loss_steps, state.loss_first, state.loss_last = 0.0, 0, None, None
        self._clock, state.seconds = None, 0.0
        self._checkpoint(state)
        self.log.write("round", **record)
        self.say(f"round {r + 1}/{s.rounds}: loss {record['loss']:.4f}"
                 + (f", R@1 {100 * evaluation['R@1']:.1f}, R@10 {100 * evaluation['R@10']:.1f}" if evaluation else "")
                 + f" ({seconds / 60:.1f} min)")
        if self.world.is_main and not s.keep_work:
            shutil.rmtree(self.work / f"round-{r + 1:02d}", ignore_errors=True)
            if last:
                remove_index(self.work, r + 1, self.world)

    # -- the run ---------------------------------------------------------------

    def run(self) -> TrainResult:
        s = self.settings
        if s.threads:
            torch.set_num_threads(s.threads)
        checkpoint = self._prepare_folder()
        self._load_model(checkpoint)
        state = self._restore(checkpoint)
        finished = state.round >= s.rounds and (self.run_dir / "model" / MANIFEST_NAME).is_file()
        if finished:
            self.notes.append(f"{self.run_dir}: the run had already finished; nothing to do")
        else:
            self._run_rounds(state)
        return TrainResult(self.run_dir, self.run_dir / "model", self.checkpoint_dir, state.history, self.notes,
                           self.world.rank)

    def _run_rounds(self, state: TrainerState) -> None:
        s = self.settings
        self.log.write("resume" if state.global_step or state.round else "start", global_step=state.global_step,
                       settings=s.to_json(), world_size=self.world.size, device=str(self.device))
        self.kb = self._kb()
        self.stream = MentionStream(mention_sources(s.links, s.langs, self.links_report), self.kb.contains)
        self.held_out: HeldOut | None = None
        if s.eval_spec is not None and self.world.is_main:
            self.held_out = read_held_out(s.eval_spec)
        if s.eval_spec is not None and not state.history and state.global_step == 0:
            self._index(0)  # the untrained model, for comparison
            baseline = self._evaluate(0)
            state.history.append({"round": 0, "steps": 0, "global_step": 0, "eval": baseline})
            self.log.write("eval", round=0, global_step=0, eval=baseline)
        for r in range(state.round, s.rounds):
            self._clock = (state.seconds, time.monotonic())
            data = self._round_data(r, state)
            if state.step < s.steps_in_round(r):
                self._train_round(r, state, data)
            self._finish_round(r, state, data)
        if self.world.is_main:
            self.task("exporting the model (ONNX)", None)
            write_model_folder(weights_from_encoder(self.model, self.source.name), self.source.tokenizer,
                               self.run_dir / "model", source=f"mel train {self.source.name} -> {self.run_dir}",
                               pooling=self.source.pooling, prefixes=self.source.prefixes,
                               max_length=s.max_length, precisions=s.precisions, force=True)
            if not s.keep_work:
                shutil.rmtree(self.work, ignore_errors=True)
        self.world.barrier()
        self.notes += _report_notes("--kb", self.kb.info.get("report") or {})
        self.notes += _report_notes("--links", self.links_report.to_json())
        if self.held_out is not None:
            self.notes += _report_notes("--eval", self.held_out.report.to_json())
        if self.stream.rejected:
            self.notes.append(f"--links: left out {self.stream.rejected:,} mention(s) whose gold entity is not in "
                              "the KB")


def _report_notes(option: str, report: dict) -> list[str]:
    """SkipReport.to_json() as notes for the user: nothing read is lost silently."""
    notes = [f"{option}: skipped {n:,} record(s): {reason}" for reason, n in report.get("skipped", {}).items()]
    notes += [f"{option}:   e.g. {example}" for example in report.get("examples", [])[:3]]
    notes += [f"{option}: left out {n:,}: {reason}" for reason, n in report.get("filtered", {}).items()]
    return notes

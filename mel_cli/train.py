"""`mel train`: fine-tune the bi-encoder (needs the training extra: pip install 'mel[train]')."""

from __future__ import annotations

import click

from mel.cli.options import max_length_option, merge_renamed, renamed, split_commas, variants_option


@click.command("train")
@click.option("--kb", "kb", multiple=True, required=True, type=click.Path(exists=True),
              help="Knowledge base: DaMuEL language part (folder of part-* files) or mel KB JSONL; repeatable.")
@click.option("--links", multiple=True, required=True, type=click.Path(exists=True),
              help="Training mentions: DaMuEL parts (their wiki-origin links) or mel documents JSONL whose "
                   "mentions carry gold qids; repeatable.")
@click.option("--model", default="default", show_default=True,
              help="Model to start from: a Hugging Face BERT-family folder or cached hub id (LEALLA, LaBSE, e5), "
                   "a `mel train` checkpoint folder, or `default` (the offline multilingual-e5-small).")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Run folder: log, checkpoint/, and the final model/ (a mel model folder).")
@click.option("--langs", multiple=True, callback=split_commas,
              help="Only these languages of the KB and links (comma-separated; for DaMuEL root folders).")
@click.option("--rounds", type=click.IntRange(1), default=5, show_default=True,
              help="Rounds of (index, mine, train).")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True,
              help="Mentions per batch (b) on each process.")
@click.option("--neg", "negatives", type=click.IntRange(1), default=7, show_default=True,
              help="Hard negatives per mention; the softmax spans b·(neg+1) entities.")
@click.option("--logit-multiplier", type=click.FloatRange(min=0, min_open=True), default=50.0, show_default=True,
              help="Cosine similarities are multiplied by this before the softmax (≤ 5 does not train).")
@click.option("--neighbours", type=click.IntRange(1), default=100, show_default=True,
              help="Nearest entities retrieved per mention to sample negatives from (doubled while too few).")
@renamed("--k", "--neighbours", type=click.IntRange(1), default=None)
@click.option("--first-round-negatives", type=click.Choice(["context", "mention"]), default="context",
              show_default=True,
              help="Mine round 1 with mentions in context (thesis) or by the mention string alone "
                   "(the thesis's proposed improvement).")
@click.option("--steps-first", type=click.IntRange(1), default=20_000, show_default=True,
              help="Optimizer steps in the first round.")
@click.option("--steps", type=click.IntRange(1), default=100_000, show_default=True,
              help="Optimizer steps in each later round.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-5, show_default=True,
              help="Adam learning rate (betas 0.9, 0.999).")
@click.option("--lr-decay", type=click.FloatRange(0, 1, min_open=True), default=0.998, show_default=True,
              help="Step decay of the learning rate in the last round.")
@click.option("--lr-decay-every", type=click.IntRange(1), default=100, show_default=True,
              help="Steps between two decays in the last round.")
@click.option("--pooling", type=click.Choice(["pooler", "cls", "mean"]), default=None,
              help="Sentence pooling (default: from the checkpoint: its mel manifest, else the BERT pooler when "
                   "present, else mean).")
@max_length_option
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True,
              help="Dropout during training (as BERT's config).")
@click.option("--eval", "eval_spec", default=None,
              help="Held-out set for R@1/R@10 after each round: mewsli9:DIR (the dataset or one language folder) "
                   "or jsonl:FILE (mel documents with gold qids).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where to train; auto picks CUDA when torch has it (mixed precision on CUDA).")
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="CPU threads for torch (default: torch's choice).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for sampling, batch order and dropout.")
@click.option("--checkpoint-every", type=click.IntRange(1), default=2000, show_default=True,
              help="Steps between checkpoints (one is also written at the end of each round).")
@click.option("--log-every", type=click.IntRange(1), default=100, show_default=True,
              help="Steps between loss records in train-log.jsonl.")
@click.option("--encode-batch-size", type=click.IntRange(1), default=256, show_default=True,
              help="Texts per forward pass when embedding the KB and mentions.")
@variants_option
@renamed("--precision", "--variants", multiple=True, type=click.Choice(["fp16", "int8"]))
@click.option("--keep-work", is_flag=True, help="Keep work/ (tokenised KB, round data, indexes) at the end.")
@click.option("--resume", is_flag=True, help="Continue the run in OUTPUT from its last checkpoint.")
@click.option("--force", is_flag=True, help="Start over, deleting what is in OUTPUT.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def train(kb, links, model, output, langs, rounds, batch_size, negatives, logit_multiplier, neighbours,
          old_neighbours, first_round_negatives, steps_first, steps, lr, lr_decay, lr_decay_every, pooling,
          max_length, dropout, eval_spec, device, threads, seed, checkpoint_every, log_every, encode_batch_size,
          variants, old_variants, keep_work, resume, force, quiet) -> None:
    """Fine-tune the bi-encoder with in-batch softmax and hard-negative rounds.

    Each round embeds the KB with the current model and builds an index,
    mines hard negatives for the round's mentions (k nearest entities, gold
    and repeats dropped, neg sampled), trains on batches of b mentions ×
    (1 + neg) entities with an in-batch softmax over cosine × multiplier,
    evaluates R@1/R@10 when --eval is given, and checkpoints. OUTPUT/model is
    then a mel model folder (for `mel index build --model`), and
    OUTPUT/checkpoint a Hugging Face-style checkpoint (for `mel model export`).
    An interrupted run continues with --resume and ends as it would have.
    Several GPUs or machines: launch with torchrun (see the README).

    \b
    Example:
      mel train --kb damuel/es --links damuel/es --model setu4993/LEALLA-small -o runs/es-small
      mel train --kb kb.jsonl --links train.jsonl --model default --eval jsonl:dev.jsonl \\
                --rounds 2 --steps-first 2000 --steps 5000 -o runs/mine
      torchrun --nproc-per-node 4 --no-python mel train --kb damuel/es --links damuel/es \\
                --model setu4993/LEALLA-small -o runs/es-small
    """
    from mel.errors import MelError

    try:
        import torch  # noqa: F401
    except ImportError:
        raise MelError("mel train needs PyTorch: pip install torch==2.13.0 (the CPU build; on a GPU machine the "
                       "CUDA one), then pip install 'mel[train]'") from None
    from mel.cli.errors import note
    from mel.cli.progress import TrainingProgress
    from mel.training.loop import train as run_training
    from mel.training.settings import TrainSettings

    neighbours = merge_renamed(neighbours, old_neighbours, "--k", "--neighbours")
    variants = merge_renamed(variants, old_variants, "--precision", "--variants")

    settings = TrainSettings(
        kb=tuple(kb), links=tuple(links), model=model, output=output, langs=langs, rounds=rounds,
        batch_size=batch_size, negatives=negatives, logit_multiplier=logit_multiplier, k=neighbours,
        steps_first=steps_first, steps=steps, lr=lr, lr_decay=lr_decay, lr_decay_every=lr_decay_every,
        first_round_negatives=first_round_negatives, pooling=pooling, max_length=max_length, dropout=dropout,
        eval=eval_spec, device=device, seed=seed, checkpoint_every=checkpoint_every, log_every=log_every,
        encode_batch_size=encode_batch_size, precisions=("fp32", *(variants or ("int8",))), threads=threads,
        keep_work=keep_work, quiet=quiet, resume=resume, force=force,
    )
    with TrainingProgress(enabled=not quiet) as progress:
        result = run_training(settings, progress=progress)
    if result.rank == 0:
        print_rounds(result.history)
        for line in result.notes:
            note(line)
        click.echo(f"model: {result.model}  (mel index build --kb … --model {result.model})")
        click.echo(f"checkpoint: {result.checkpoint}  (mel model export {result.checkpoint} -o DIR)")


def _percent(value) -> str:
    return "" if value is None else f"{100 * value:.1f}"


def print_rounds(history: list[dict]) -> None:
    """One row per round (round 0: the model before training, when evaluated), on stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Training rounds", title_justify="left")
    for name in ("round", "steps", "loss", "R@1", "R@10", "in KB", "k grown", "minutes"):
        table.add_column(name, justify="right")
    for record in history:
        evaluation = record.get("eval") or {}
        mining = record.get("mining") or {}
        loss = record.get("loss")
        table.add_row(
            str(record["round"]), f"{record.get('steps', 0):,}", "" if loss is None else f"{loss:.4f}",
            _percent(evaluation.get("R@1")), _percent(evaluation.get("R@10")), _percent(evaluation.get("in_kb")),
            "" if not mining else f"{mining.get('grown', 0):,}",
            "" if record.get("seconds") is None else f"{record['seconds'] / 60:.1f}",
        )
    Console(soft_wrap=True).print(table)

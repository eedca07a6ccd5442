"""`mel train`: fine-tune the bi-encoder with in-batch softmax and hard-negative rounds.

Modules, by concern (torch is imported only by those that need it):

- settings: the run's options (TrainSettings) and the eval-set spec;
- source: the model to start from (HF folder, a run's checkpoint, or the offline default);
- torch_model: a small BERT in torch whose state-dict names are Hugging Face's;
- kb_store, round_data: tokenised KB and per-round mention/negative tables on disk;
- mining: hard negatives through the index search API;
- batches, loss: batches of b mentions x (1 + neg) entities and the in-batch softmax;
- evaluation: R@1/R@10 on a held-out set;
- checkpoints, distributed, report, loop: saving, DDP, logs, and the rounds.

Use `mel.training.loop.train(TrainSettings(...))`.
"""

from mel.training.settings import EvalSpec, TrainSettings

__all__ = ["EvalSpec", "TrainSettings"]

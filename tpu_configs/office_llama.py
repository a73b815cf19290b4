"""The APAO paper's Llama (decoder-only) on Amazon Office, by loss, one GPU.

Reproduces the Llama rows of APAO (arXiv 2603.02730) Table 1: 8 layers, 8
heads x 16, hidden 128, SwiGLU FFN 1024, tied embeddings, dropout 0.1 (3.80M
parameters), trained from scratch with the recipe and data of office_t5.py
(common.paper_config).

Argument (``FILE:key=value,...``; the first choice is the default):
  loss=ce|apao|apao_running
      apao: beta 0.4, eta 5e-4, the paper's best pair for Llama on Office;
      apao_running: the same with the weights carried across steps (not measured).
  dtype=auto|float32|bfloat16     compute dtype; auto: the platform's.
  platform=gpu|tpu_v4_8|tpu_v5e_8  device count and dtype (common.PLATFORMS).
  rl=vstar|grpo_beam|grpo_sample|sibling
      the arm `genrec rl` runs from a trained run (common.RL_ARMS, docs/rl.md); `genrec train`
      ignores it. The value head reads the Llama trunk at the SID prefix positions. Not measured
      with Llama: expected result unknown; on the T5 no arm beat its CE start (office_t5.py). The
      test and its one-call command are written in docs/results.md, "V-STAR on Office with the Llama
      backbone".
      `genrec rl --config tpu_configs/office_llama.py:rl=vstar --init-from RUN --workdir DIR
      --set rl.optimizer.learning_rate=3e-6 --set rl.num_steps=300 --set rl.eval_every=50`

Variants: exact command, expected test Recall@10 on an H200 (docs/results.md):
`genrec train --config tpu_configs/office_llama.py:loss=ce --workdir runs/x`: Recall@10 0.0567 (1 seed)
`genrec train --config tpu_configs/office_llama.py:loss=apao --workdir runs/x`: Recall@10 0.0559 (1 seed)

Published bars, test Recall@10 (paper): ce 0.0469, apao 0.0559.
"""

from training.config import TrainConfig

from . import common

LOSSES = common.paper_losses(beta=0.4, eta=5e-4)


def get_config(arg: str = "") -> TrainConfig:
    return common.paper_config(arg, dataset="Office", preset="llama_small_rec", losses=LOSSES, log_every=10)

"""The APAO paper's T5 on Amazon Office, by loss: one GPU, or a TPU slice.

Reproduces the T5 rows of APAO (arXiv 2603.02730) Table 1 on Office with the
paper's setup: 4-level RQ-KMeans SIDs, T5 4+4 layers, d_model 128, 6 heads x
64, d_ff 1024, dropout 0.1 (4.59M parameters) with Hugging Face T5's numerics
(``model=hf``, the default since its A/B won: +7.4% test Recall@10 over our
first T5's 12 seeds with test ranks, p 0.016, docs/results.md "Hugging Face
T5 numerics on Office CE"),
and the training recipe of common.paper_config (batch 1024: 38 steps an
epoch). A CE run with ``model=default`` takes about 1.5 GPU-minutes alone;
one with ``model=hf`` runs about 1.4x as many steps before it early stops
(3,460-3,690 against 2,050-3,230).

Argument (``FILE:key=value,...``; the first choice is the default):
  loss=ce|apao|apao_running|msl|apao_pairwise
      apao: beta 0.3, eta 1e-4, the paper's best pair for T5 on Office;
      apao_running: the same with the weights carried across steps;
      msl: temperature 2.0 (the paper's), scored with the trie-normalised beam search;
      apao_pairwise: beta 0.1 (measured better than 0.3), eta 1e-4, logits
      [1024, 101, 4, 1026] float32 (~1.7 GB) a step (docs/losses.md).
  dtype=auto|float32|bfloat16     compute dtype; auto: the platform's.
  platform=gpu|tpu_v4_8|tpu_v5e_8  device count and dtype (common.PLATFORMS).
  model=hf|default
      hf: Hugging Face T5's numerics, which the published T5 figures come from
      (common.T5_MODEL_VARIANTS, docs/models.md): dropout 0.1 also on the
      attention probabilities and the FFN hidden layer, unscaled attention
      logits, HF's init (q std (d_model * head_dim) ** -0.5).
      default: our first T5, which every result below marked ``model=default``
      was measured with (its name predates hf becoming the default).
  rl=vstar|grpo_beam|grpo_sample|sibling
      the arm `genrec rl` runs from a trained run (common.RL_ARMS, docs/rl.md);
      `genrec train` ignores it.

Data: ``data/Office`` (relative to the working directory) holding
``Office.inter.json`` and ``Office.index.rq-kmeans.json``; elsewhere, add
``--set data.data_dir=PATH``.

Variants: exact command, expected test Recall@10 (mean over seeds on H100/H200;
docs/results.md has NDCG, the spread and the comparisons):
`genrec train --config tpu_configs/office_t5.py:loss=ce --workdir runs/x --set seed=S`: Recall@10 0.0656 (4 seeds)
`genrec train --config tpu_configs/office_t5.py:loss=ce,model=default --workdir runs/x`: Recall@10 0.0616 (15 seeds)
`genrec train --config tpu_configs/office_t5.py:loss=apao,model=default --workdir runs/x`: Recall@10 0.0612 (16 seeds)
`genrec train --config tpu_configs/office_t5.py:loss=apao_running,model=default --workdir runs/x`:
  Recall@10 0.0617 (14 seeds)
`genrec train --config tpu_configs/office_t5.py:loss=msl,model=default --workdir runs/x`: Recall@10 0.0569 (2 seeds)
`genrec train --config tpu_configs/office_t5.py:loss=apao_pairwise,model=default --workdir runs/x`:
  Recall@10 0.0637 (8 seeds)
`genrec train --config tpu_configs/office_t5.py:loss=apao --workdir runs/x`: to be measured (APAO and MSL with
  model=hf: not run; the APAO study ended on model=default)
`genrec train --config tpu_configs/office_t5.py:loss=apao,platform=tpu_v5e_8 --workdir runs/x`: to be measured
`genrec train --config tpu_configs/office_t5.py:loss=apao,platform=tpu_v4_8 --workdir runs/x`: to be measured

RL on top of a CE run (`genrec rl`; the pre-registered comparison of all arms, 4 RL seeds each, is in
docs/results.md, "V-STAR RL on Office"), measured with model=default (`genrec rl` requires the start's
numerics): exact command, measured test Recall@10 (seed mean) against its CE start's 0.0648 (runs/ce:
`loss=ce,model=default`, config seed):
`genrec rl --config tpu_configs/office_t5.py:rl=vstar,model=default --init-from runs/ce --workdir runs/x --set
  rl.optimizer.learning_rate=3e-6 --set rl.num_steps=300 --set rl.eval_every=50`: Recall@10 0.0640 (4 seeds; -1.3%)
  the same with `rl=grpo_beam`: 0.0624 (4 seeds), `rl=grpo_sample`: 0.0645 (4 seeds), `rl=sibling`: 0.0642 (4 seeds)
  `rl=vstar --set rl.reward=ranking`: 0.0648 (4 seeds; kept step 0), `rl=grpo_beam --set rl.reward=ranking`: 0.0629
  (docs/results.md, "V-STAR on Office: the ranking reward and a CE control")
From the model=hf start (runs/ce: `loss=ce --set seed=2`, test Recall@10 0.0679; docs/results.md, "V-STAR RL
on Office from the Hugging Face T5 start"), the same commands without `model=default`: `rl=vstar` 0.0672 (4 seeds;
-1.0%), `rl=grpo_beam` 0.0681, `rl=grpo_sample` 0.0684, `rl=sibling` 0.0677 (4 seeds each): no arm gains.

Published bars, test Recall@10 (paper): ce 0.0608, apao 0.0667, apao_pairwise
0.0671; 0.0638 for the strongest baseline (MSL or two-stage S-DPO). The APAO
reference code on one H100 (one seed): ce 0.0599, apao 0.0654.
"""

from training.config import TrainConfig

from . import common

LOSSES = common.paper_losses(beta=0.3, eta=1e-4, msl_tau=2.0, pairwise_beta=0.1)


def get_config(arg: str = "") -> TrainConfig:
    return common.paper_config(arg, dataset="Office", preset="t5_small_rec", losses=LOSSES, log_every=10,
                               default_model="hf")

"""Fault suite: RL settings that cannot train, or that used to fail only after the step-0 evaluation
(or never), are refused by ``training.rl.check_settings`` in one line naming the setting and what it
may be, before anything is built; nothing is trained here (tests/test_rl_loop.py runs the command)."""

import pytest
from train_cli import REPO, RL_TINY, SMOKE, TINY_RUN

from genrec.console import UserError
from training.config import apply_overrides, load_config_file
from training.rl import check_settings

CONFIG = load_config_file(REPO / SMOKE, TINY_RUN + RL_TINY)  # V-STAR, 8 rollouts, rl.batch_size=8
# The tiny smoke data: 3-level SIDs, 613 training requests, a trie of 51 prefixes shorter than 3 codes (the
# root, 8 of length 1, 42 of length 2: VED's most evaluations a request); 8 (fake) devices.
SHAPE = dict(num_levels=3, num_train_examples=613, num_devices=8, num_prefixes=51)

# (what a user set, the text of the one-line error); what happened before the check, in the comment.
REFUSED = [
    # Ran to the end: GRPO's advantage and Sibling-GRPO's groups are empty with one rollout, loss terms 0.
    (["rl.num_rollouts=1"], "rl.num_rollouts=1: GRPO and Sibling-GRPO compare a request's rollouts"),
    (["rl.num_rollouts=1", "rl.rollouts=beam", "rl.sibling_weight=0"],
     "(rl.grpo_weight=1.0); use rl.num_rollouts >= 2"),
    (["rl.num_rollouts=1", "rl.grpo_weight=0"], "(rl.sibling_weight=1.0); use rl.num_rollouts >= 2"),
    # Ran to the end with a zero loss: nothing moved.
    (["rl.grpo_weight=0", "rl.sibling_weight=0", "rl.value_weight=0"],
     "rl.grpo_weight, rl.sibling_weight and rl.value_weight are all 0: nothing would train"),
    # Ran to the end: VED reached no complete SID, every rollout slot empty.
    (["rl.budget=1"], "rl.budget=1 is below one width-1 beam search (3 forward tokens for 3-level SIDs): VED would "
                      "reach no complete SID; set rl.budget >= 3, or none (one width-8 beam search, 17 tokens)"),
    (["rl.budget=2"], "rl.budget=2 is below one width-1 beam search"),
    # Failed after the step-0 evaluation, naming neither the rl. key nor the allowed length.
    (["rl.level_weights=0.5,1"], "rl.level_weights=0.5,1 has 2 weights but the SIDs have 3 levels; give 3"),
    (["rl.level_weights=0.1,0.2,0.3,1"], "rl.level_weights=0.1,0.2,0.3,1 has 4 weights"),
    # Failed after the step-0 evaluation, with "613 examples make no batch of 616", an Orbax traceback
    # of the interrupted best-checkpoint save, and a workdir left behind.
    (["rl.batch_size=616"], "rl.batch_size=616 is more than the 613 training requests; use at most 613 "
                            "(e.g. --set rl.batch_size=608)"),
    (["rl.batch_size=12"], "rl.batch_size=12 does not split evenly over 8 devices"),
    (["eval.selection_metric=valid_ce"], "eval.selection_metric=valid_ce does not apply to RL"),
    # Ran, with rl.budget silently ignored: beam and sampled rollouts spend one width-G beam search.
    (["rl.budget=100", "rl.rollouts=sample"], "rl.budget=100 sets VED's search budget only; rl.rollouts=sample "
                                              "spends 17 forward tokens a request"),
    (["rl.budget=1", "rl.rollouts=beam"], "rl.budget=1 sets VED's search budget only; rl.rollouts=beam"),
    # Ran for minutes at gigabytes (a node table and an iteration count sized by the budget) and ignored Ctrl-C:
    # VED evaluates each trie prefix at most once, so no budget above their number can be spent.
    (["rl.budget=100000"], "rl.budget=100000 is more than VED can spend: it evaluates each prefix of the "
                           "catalogue trie shorter than 3 codes at most once, and there are 51 (the root included); "
                           "set rl.budget <= 51"),
    (["rl.budget=52"], "rl.budget=52 is more than VED can spend"),
    # Ran, with the setting silently ignored: VED draws children from the policy itself (temperature 1,
    # untruncated), beam rollouts take the beam search's top; two temperatures gave identical VED runs.
    (["rl.temperature=0.05"], "rl.temperature=0.05 shapes sampled rollouts only; rl.rollouts=ved draws "
                              "children from the policy itself: drop it, or use rl.rollouts=sample"),
    (["rl.top_k=5", "rl.top_p=0.9"], "rl.top_k=5, rl.top_p=0.9 shapes sampled rollouts only"),
    (["rl.rollouts=beam", "rl.sibling_weight=0", "rl.value_weight=0", "rl.top_p=0.5"],
     "rl.top_p=0.5 shapes sampled rollouts only; rl.rollouts=beam takes the beam search's top"),
]


@pytest.mark.parametrize("overrides, expected", REFUSED, ids=[" ".join(case[0]) for case in REFUSED])
def test_impossible_rl_setting_is_refused_in_one_line(overrides, expected):
    with pytest.raises(UserError) as error:
        check_settings(apply_overrides(CONFIG, overrides), **SHAPE)
    assert expected in str(error.value) and "\n" not in str(error.value), str(error.value)


@pytest.mark.parametrize("overrides", [
    [],
    ["rl.num_rollouts=2"],
    ["rl.num_rollouts=1", "rl.grpo_weight=0", "rl.sibling_weight=0"],  # the value head alone
    ["rl.grpo_weight=0", "rl.sibling_weight=0"],
    ["rl.budget=3"],  # one width-1 beam search: VED's smallest budget
    ["rl.budget=51"],  # every prefix of the trie: VED's largest
    ["rl.num_rollouts=32", "rl.budget=65"],  # the default budget (one width-32 beam search), above the trie's 51
    ["rl.level_weights=0,0.5,1"],
    ["rl.batch_size=608"],
    ["rl.rollouts=sample", "rl.temperature=0.5", "rl.top_k=5", "rl.top_p=0.9"],  # where they apply
    ["rl.temperature=1.0"],  # the default, spelt out
], ids=lambda overrides: " ".join(overrides) or "defaults")
def test_edge_rl_settings_are_accepted(overrides):
    check_settings(apply_overrides(CONFIG, overrides), **SHAPE)

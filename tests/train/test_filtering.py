import math
import statistics

import pytest

from superhf.train.filtering import relative_weights, select_training_samples, top_k_per_prompt


def test_keeps_best_of_each_prompt_never_across_prompts():
    # prompt 0's samples all beat prompt 1's; prompt 1 still keeps its own best
    scores = [0.9, 0.8, 0.95, -2.0, -1.0, -3.0]
    prompts = [0, 0, 0, 1, 1, 1]
    assert top_k_per_prompt(scores, prompts, k=1) == [2, 4]
    assert top_k_per_prompt(scores, prompts, k=2) == [2, 0, 4, 3]


def test_ties_break_toward_earlier_sample_and_do_not_depend_on_layout():
    scores = [0.5, 0.7, 0.7, 0.1, 0.1]
    prompts = [3, 3, 3, 7, 7]
    assert top_k_per_prompt(scores, prompts, k=1) == [1, 3]
    # interleaved prompts give the same choice per prompt
    assert top_k_per_prompt([0.1, 0.5, 0.1, 0.7, 0.7], [7, 3, 7, 3, 3], k=1) == [0, 3]


def test_k_larger_than_group_keeps_all():
    assert sorted(top_k_per_prompt([1.0, 2.0, 3.0], [0, 0, 1], k=5)) == [0, 1, 2]


def test_stage_functions_are_importable_where_a_user_looks():
    import doctest

    import superhf.train.filtering
    from superhf.generation import generate_completions
    from superhf.rewards import RewardScorer, load_reward_funcs
    from superhf.train import SuperHFTrainer, superhf_loss
    from superhf.train import top_k_per_prompt as exported

    assert exported is top_k_per_prompt
    for stage in (generate_completions, RewardScorer.__call__, superhf_loss, top_k_per_prompt):
        assert "Args:" in stage.__doc__ and "Returns:" in stage.__doc__, stage
    assert callable(load_reward_funcs) and callable(SuperHFTrainer)
    assert doctest.testmod(superhf.train.filtering).failed == 0


# --- issue 17's options: select_training_samples --------------------------------------------

SCORES = [1.0, 4.0, 2.0, 3.0, 7.0, 7.0, 7.0, 7.0, 0.0, 5.0, 5.0, 1.0]
PROMPTS = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]  # prompt 1 is uniform


def test_every_option_off_is_the_papers_top_k():
    for k in (1, 2, 4):
        s = select_training_samples(SCORES, PROMPTS, k)
        assert s.indices == s.kept == top_k_per_prompt(SCORES, PROMPTS, k)
        assert s.weights is None and s.num_skipped_prompts == 0 and s.num_negatives == 0


def test_skip_uniform_prompts_drops_a_prompt_whose_samples_all_tie():
    s = select_training_samples(SCORES, PROMPTS, 1, skip_uniform_prompts=True)
    assert s.indices == [1, 9] and s.num_skipped_prompts == 1 and s.weights is None
    # within 1e-6 counts as a tie; 1e-5 apart does not
    assert (
        select_training_samples([1.0, 1.0 + 1e-7], [0, 0], 1, skip_uniform_prompts=True).kept == []
    )
    assert select_training_samples(
        [1.0, 1.0 + 1e-5], [0, 0], 1, skip_uniform_prompts=True
    ).kept == [1]


def test_advantage_weights_are_the_group_z_scores_of_better_than_average_samples():
    s = select_training_samples(SCORES, PROMPTS, 4, sample_weighting="advantage")
    # prompt 0: mean 2.5, sample std sqrt(5/3); prompt 1: all equal (advantage 0, dropped);
    # prompt 2: mean 2.75, sample std sqrt(20.75 / 3); only positive advantages are trained
    std0, std2 = math.sqrt(5 / 3) + 1e-4, math.sqrt(20.75 / 3) + 1e-4
    raw = {1: 1.5 / std0, 3: 0.5 / std0, 9: 2.25 / std2, 10: 2.25 / std2}
    assert s.indices == s.kept == [1, 3, 9, 10]  # each prompt best first, as top-K orders them
    mean = sum(raw.values()) / 4
    assert s.weights == pytest.approx([raw[i] / mean for i in s.indices])
    assert statistics.fmean(s.weights) == pytest.approx(1.0)
    # top-K still bounds the candidates: K = 1 keeps each prompt's best, weighted by how far
    # it stands out from its prompt
    s = select_training_samples(SCORES, PROMPTS, 1, "advantage")
    assert s.indices == [1, 9] and s.weights == pytest.approx(
        [2 * raw[1] / (raw[1] + raw[9]), 2 * raw[9] / (raw[1] + raw[9])]
    )


def test_rank_weights_are_centred_ranks_with_ties_sharing_their_rank():
    assert relative_weights([1.0, 4.0, 2.0, 3.0], "rank") == pytest.approx([-1, 1, -1 / 3, 1 / 3])
    assert relative_weights([0.0, 5.0, 5.0, 1.0], "rank") == pytest.approx(
        [-1, 2 / 3, 2 / 3, -1 / 3]
    )
    assert relative_weights([7.0] * 4, "rank") == [0.0] * 4
    assert relative_weights([3.0], "rank") == [0.0] and relative_weights([], "advantage") == []
    s = select_training_samples(SCORES, PROMPTS, 4, sample_weighting="rank")
    assert s.indices == [1, 3, 9, 10]
    assert s.weights == pytest.approx([1.5, 0.5, 1.0, 1.0])  # / their mean, 2/3


def test_negatives_are_each_prompts_worst_unless_it_ties_the_best_or_is_kept():
    s = select_training_samples(SCORES, PROMPTS, 1, negative_weight=0.5)
    # prompt by prompt: the kept sample, then the worst (uniform prompt 1 has no negative)
    assert s.indices == [1, 0, 4, 9, 8]
    assert s.weights == [1.0, -0.5, 1.0, 1.0, -0.5]
    assert s.kept == [1, 4, 9] and s.num_negatives == 2
    # every sample kept: the worst is trained toward, not pushed down
    assert select_training_samples(SCORES, PROMPTS, 4, negative_weight=0.5).num_negatives == 0
    # with advantage weighting the worst has a negative advantage: it is a negative
    s = select_training_samples(SCORES, PROMPTS, 4, "advantage", 0.5, skip_uniform_prompts=True)
    assert s.indices == [1, 3, 0, 9, 10, 8] and s.weights[2] == s.weights[5] == -0.5
    assert s.num_skipped_prompts == 1

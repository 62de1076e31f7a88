from superhf.train.filtering import top_k_per_prompt


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

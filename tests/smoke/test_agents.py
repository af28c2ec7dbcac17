"""LMs inside RL agents: exploration maths, the LM encoder and its cache, the action prior, the judge, SB3."""

import functools
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from langrl.agents import exploration as ex
from langrl.agents.cache import LRUCache
from langrl.envs.text import CARTPOLE_ACTIONS, CARTPOLE_ID, TokenizeObservation, decode_ids

sb3 = pytest.importorskip("stable_baselines3")

from langrl.agents import (  # noqa: E402  (after the importorskip)
    ActionPrior,
    LMActionPrior,
    LMEncoder,
    LMJudge,
    LMJudgeReward,
    PriorActorCriticPolicy,
    PriorDQN,
    action_logprobs,
    pool_hidden,
)
from langrl.rewards import RewardFn  # noqa: E402

BABYAI_ACTIONS = ["turn left", "turn right", "go forward", "pick up", "drop", "toggle"]


# ---------------------------------------------------------------- exploration maths (hand-computed)

def test_epsilon_schedules():
    assert ex.linear_schedule(0, 1.0, 0.1, 100) == 1.0
    assert ex.linear_schedule(50, 1.0, 0.1, 100) == pytest.approx(0.55)
    assert ex.linear_schedule(500, 1.0, 0.1, 100) == pytest.approx(0.1)
    assert ex.exponential_schedule(0, 1.0, 0.1, 0.5) == 1.0
    assert ex.exponential_schedule(2, 1.0, 0.1, 0.5) == pytest.approx(0.1 + 0.9 * 0.25)
    assert ex.exponential_schedule(10_000, 1.0, 0.1, 0.5) == pytest.approx(0.1)


def test_softmax_and_boltzmann_mix():
    np.testing.assert_allclose(ex.softmax(np.array([0.0, math.log(2.0)])), [1 / 3, 2 / 3])
    np.testing.assert_allclose(ex.softmax(np.array([0.0, math.log(4.0)]), temperature=2.0), [1 / 3, 2 / 3])
    np.testing.assert_allclose(ex.softmax(np.array([[1000.0, 1000.0]])), [[0.5, 0.5]])  # no overflow
    # agent logits (0, 0) times a prior (0.2, 0.8) with weight 1: the prior itself
    mixed = ex.boltzmann_mix(np.zeros(2), np.log([0.2, 0.8]), weight=1.0)
    np.testing.assert_allclose(ex.softmax(mixed), [0.2, 0.8])
    # weight 2 squares the prior: (0.04, 0.64) / 0.68
    np.testing.assert_allclose(ex.softmax(ex.boltzmann_mix(np.zeros(2), np.log([0.2, 0.8]), 2.0)),
                               [0.04 / 0.68, 0.64 / 0.68])
    np.testing.assert_allclose(ex.log_softmax(np.array([1.0, 1.0])), np.log([0.5, 0.5]))


def test_ucb_choice():
    # Q + sqrt(ln 16 / N): 1 + 0.527, 2 + 1.665, 0.5 + 0.745 -> action 1
    scores = ex.ucb_scores(np.array([1.0, 2.0, 0.5]), np.array([10, 1, 5]), t=16, c=1.0)
    np.testing.assert_allclose(scores, [1 + math.sqrt(math.log(16) / 10), 2 + math.sqrt(math.log(16)),
                                        0.5 + math.sqrt(math.log(16) / 5)])
    # the rarely tried worse arm wins on its bonus; without a bonus the greedy one does
    assert ex.ucb_action(np.array([1.0, 0.9]), np.array([100, 1]), t=101, c=1.0) == 1
    assert ex.ucb_action(np.array([1.0, 0.9]), np.array([100, 1]), t=101, c=0.0) == 0
    assert ex.ucb_action(np.array([5.0, 0.0, 0.0]), np.array([3, 0, 0]), t=3) == 1  # untried first


def test_epsilon_greedy_and_sampling():
    rng = np.random.default_rng(0)
    values = np.array([[0.0, 1.0, 0.5], [2.0, 0.0, 0.0]])
    np.testing.assert_array_equal(ex.epsilon_greedy(values, 0.0, rng), [1, 0])
    prior = np.log(np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]) + 1e-30)
    np.testing.assert_array_equal(ex.epsilon_greedy(values, 1.0, rng, prior), [2, 2])
    draws = ex.sample_categorical(np.tile([0.1, 0.0, 0.9], (20_000, 1)), rng)
    np.testing.assert_allclose(np.bincount(draws, minlength=3) / 20_000, [0.1, 0.0, 0.9], atol=0.01)
    draws = np.array([ex.boltzmann(np.zeros(2), 1.0, rng, np.log([0.25, 0.75])) for _ in range(4000)])
    assert abs(draws.mean() - 0.75) < 0.03
    assert ex.epsilon_greedy(np.array([0.0, 3.0]), 0.0, rng) == 1  # a single state gives a scalar


def test_lru_cache_evicts_least_recent():
    cache = LRUCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now the most recent
    cache.put("c", 3)
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3
    assert (cache.hits, cache.misses, len(cache)) == (3, 1, 2)


# ---------------------------------------------------------------- the LM encoder

def test_pool_hidden_by_hand():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]])  # (1, 3, 2), last position is padding
    mask = torch.tensor([[True, True, False]])
    torch.testing.assert_close(pool_hidden(hidden, mask, "mean"), torch.tensor([[2.0, 3.0]]))
    torch.testing.assert_close(pool_hidden(hidden, mask, "last"), torch.tensor([[3.0, 4.0]]))


def cartpole_ids(tiny, max_length=96):
    return TokenizeObservation(gym.make(CARTPOLE_ID), tiny.tokenizer, max_length=max_length)


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_encoder_shapes_and_padding_invariance(tiny, pooling):
    env = cartpole_ids(tiny)
    encoder = LMEncoder(env.observation_space, lm=tiny, pooling=pooling, cache_size=0, normalize=False)
    obs = np.stack([env.reset(seed=s)[0] for s in range(3)])
    features = encoder(torch.as_tensor(obs, dtype=torch.float32))  # SB3 hands Box observations as floats
    assert features.shape == (3, tiny.model.config.hidden_size) == (3, encoder.features_dim)
    # right padding changes nothing: the same text at a longer fixed length encodes the same
    longer = LMEncoder(cartpole_ids(tiny, 160).observation_space, lm=tiny, pooling=pooling, normalize=False)
    padded = np.full((3, 160), tiny.tokenizer.pad_token_id)
    padded[:, :96] = obs
    torch.testing.assert_close(longer(torch.as_tensor(padded)), features, atol=1e-5, rtol=1e-5)


def test_encoder_cache_hits_on_repeated_observations(tiny):
    env = cartpole_ids(tiny)
    encoder = LMEncoder(env.observation_space, lm=tiny, normalize=False)
    calls = []
    encoder.frozen.module.register_forward_hook(lambda *_: calls.append(1))
    a, b = env.reset(seed=0)[0], env.reset(seed=1)[0]
    first = encoder(torch.as_tensor(np.stack([a, b, a])))
    assert len(calls) == 1 and encoder.cache.misses == 2  # one pass, over the two distinct rows
    again = encoder(torch.as_tensor(np.stack([b, a])))
    assert len(calls) == 1 and encoder.cache.hits == 2  # all from the cache
    torch.testing.assert_close(again, first[[1, 0]])
    torch.testing.assert_close(first[0], first[2])
    assert not any(p.requires_grad for p in tiny.model.parameters())
    assert not list(encoder.parameters())  # the frozen LM is outside the module tree (see encoder.py)


def test_encoder_standardises_features_with_running_statistics(tiny):
    env = cartpole_ids(tiny)
    obs = torch.as_tensor(np.stack([env.reset(seed=s)[0] for s in range(6)]))
    encoder = LMEncoder(env.observation_space, lm=tiny)
    out = encoder(obs[:4])  # statistics of exactly these 4 rows: zero mean, unit variance per dimension
    torch.testing.assert_close(out.mean(0), torch.zeros(out.size(1)), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(0, unbiased=False), torch.ones(out.size(1)), atol=1e-3, rtol=0)
    encoder(obs[4:])  # two more rows: the running statistics equal those of all six
    raw = LMEncoder(env.observation_space, lm=tiny, normalize=False)(obs)
    stats = encoder.standardize
    torch.testing.assert_close(stats.running_mean, raw.mean(0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stats.running_var, raw.var(0, unbiased=False), atol=1e-5, rtol=1e-4)
    assert set(encoder.state_dict()) == {f"standardize.running_{n}" for n in ("mean", "var", "count")}


def test_encoder_finetune_modes_train_the_right_parameters(tiny):
    env = cartpole_ids(tiny)
    obs = torch.as_tensor(np.stack([env.reset(seed=0)[0]]))
    full = LMEncoder(env.observation_space, lm=tiny, finetune="full")
    full(obs).sum().backward()
    assert all(p.grad is not None for p in full.parameters() if p.requires_grad)
    assert full.lm_forward_calls == 1 and len(full.cache) == 0
    lora = LMEncoder(env.observation_space, lm=tiny, finetune="lora", lora_r=2)
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert tiny.model.model.layers[0].self_attn.q_proj.__class__.__name__ == "Linear"  # user's LM untouched


def test_ppo_trains_with_the_tiny_lm_encoder_on_cartpole_text(tiny):
    torch.manual_seed(0)
    env = cartpole_ids(tiny)
    model = sb3.PPO("MlpPolicy", env, n_steps=128, batch_size=64, n_epochs=2, seed=0, device="cpu",
                    policy_kwargs={"features_extractor_class": LMEncoder,
                                   "features_extractor_kwargs": {"lm": tiny}, "net_arch": [32]})
    before = [p.detach().clone() for p in model.policy.parameters()]
    lm_before = tiny.model.model.embed_tokens.weight.detach().clone()
    model.learn(256)
    after = list(model.policy.parameters())
    assert any(not torch.equal(b, a) for b, a in zip(before, after, strict=True))
    assert all(torch.isfinite(p).all() for p in after)
    torch.testing.assert_close(tiny.model.model.embed_tokens.weight, lm_before)
    encoder = model.policy.features_extractor
    assert encoder.cache.hits > 0 and encoder.lm_forward_calls < 256 + 2 * 4  # epochs re-read the cache
    action, _ = model.predict(env.reset(seed=9)[0], deterministic=True)
    assert int(action) in (0, 1)


# ---------------------------------------------------------------- the action prior

def reference_scores(lm, prompt_ids, action_ids):
    """One full forward per action: the slow way to the same numbers."""
    out = []
    for a in action_ids:
        logp = lm.model(torch.tensor([list(prompt_ids) + list(a)])).logits[0].log_softmax(-1)
        out.append(sum(logp[len(prompt_ids) - 1 + k, tok].item() for k, tok in enumerate(a)))
    return np.array(out)


@pytest.mark.parametrize("chat", [True, False])
def test_prior_sums_to_one_and_matches_the_slow_reference(tiny, chat):
    prior = LMActionPrior(tiny, BABYAI_ACTIONS, chat=chat)
    assert isinstance(prior, ActionPrior)
    observations = ["Goal: go to the red ball.\nYou see a red ball 2 steps forward.", "Goal: pick up a key."]
    probs = prior.probs(observations)
    assert probs.shape == (2, 6)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-9)
    for row, obs in zip(probs, observations, strict=True):
        ref = reference_scores(tiny, prior.prompt_ids(obs), prior.action_ids)
        np.testing.assert_allclose(prior.scores(obs), ref, atol=1e-5)
        np.testing.assert_allclose(row, ex.softmax(ref), atol=1e-5)
    misses = prior.cache.misses
    prior.probs(observations)
    assert prior.cache.misses == misses and prior.cache.hits >= 2


@pytest.mark.parametrize("chat", [True, False])
def test_prior_reuses_the_shared_prompt_prefix(tiny, chat):
    """The header before the observation is run once; scores still equal a full pass per action."""
    prior = LMActionPrior(tiny, BABYAI_ACTIONS, chat=chat)
    obs = "Goal: open the door.\nYou see a wall 1 step left."
    n, _ = prior.shared_prefix()
    assert n > 5 and prior.prompt_ids(obs)[:n] == prior.prefix_ids
    ref = reference_scores(tiny, prior.prompt_ids(obs), prior.action_ids)
    np.testing.assert_allclose(prior.scores(obs), ref, atol=1e-5)
    again = obs + " Again."  # a second observation: the prefix cache was copied, not consumed
    np.testing.assert_allclose(prior.scores(again), reference_scores(tiny, prior.prompt_ids(again),
                                                                     prior.action_ids), atol=1e-5)


def test_calibrated_prior_divides_by_the_content_free_prior(tiny):
    raw = LMActionPrior(tiny, BABYAI_ACTIONS)
    calibrated = LMActionPrior(tiny, BABYAI_ACTIONS, calibrate=True)
    np.testing.assert_allclose(calibrated.probs(["N/A"])[0], 1 / 6, atol=1e-9)  # uninformative: uniform
    obs = "Goal: go to the red ball.\nYou see a red ball 2 steps forward."
    expected = ex.softmax(raw.scores(obs) - raw.scores("N/A"))
    np.testing.assert_allclose(calibrated.probs([obs])[0], expected, atol=1e-9)


def test_action_logprobs_single_token_actions(tiny):
    scores = action_logprobs(tiny.model, [1, 70, 71], [[72], [73]])
    np.testing.assert_allclose(scores.numpy(), reference_scores(tiny, [1, 70, 71], [[72], [73]]), atol=1e-5)


class FixedPrior:
    """A hand-written prior that puts (almost) all mass on one action."""

    def __init__(self, actions, favourite):
        self.actions = list(actions)
        p = np.full(len(actions), 1e-9)
        p[favourite] = 1.0
        self.row = np.log(p / p.sum())

    def logprobs(self, observations):
        return np.tile(self.row, (len(observations), 1))


def test_prior_dqn_explores_from_the_prior(tiny):
    env = cartpole_ids(tiny)
    decode = functools.partial(decode_ids, tiny.tokenizer)
    dqn = PriorDQN("MlpPolicy", env, prior=FixedPrior(CARTPOLE_ACTIONS, 1), decode=decode, learning_starts=40,
                   buffer_size=500, train_freq=4, exploration_fraction=1.0, exploration_initial_eps=1.0,
                   exploration_final_eps=1.0, seed=0, device="cpu",
                   policy_kwargs={"features_extractor_class": LMEncoder,
                                  "features_extractor_kwargs": {"lm": tiny}, "net_arch": [16]})
    lm_before = tiny.model.model.embed_tokens.weight.detach().clone()
    dqn.learn(80)
    actions = dqn.replay_buffer.actions[: dqn.replay_buffer.pos].ravel()
    assert len(actions) == 80 and (actions == 1).all()  # warm-up and epsilon = 1: all from the prior
    # DQN's target update must not touch the shared frozen LM (Polyak on a shared tensor would zero it)
    torch.testing.assert_close(tiny.model.model.embed_tokens.weight, lm_before)
    greedy, _ = dqn.predict(env.reset(seed=0)[0], deterministic=True)
    assert int(greedy) in (0, 1)
    plain = PriorDQN("MlpPolicy", gym.make("CartPole-v1"), learning_starts=10, buffer_size=100, seed=0)
    plain.learn(20)  # without a prior it is SB3's DQN


def test_prior_dqn_boltzmann_exploration_follows_the_prior(tiny):
    env = cartpole_ids(tiny)
    decode = functools.partial(decode_ids, tiny.tokenizer)
    dqn = PriorDQN("MlpPolicy", env, prior=FixedPrior(CARTPOLE_ACTIONS, 0), decode=decode, seed=0,
                   device="cpu", boltzmann_temperature=1.0, prior_weight=1.0, buffer_size=100,
                   policy_kwargs={"features_extractor_class": LMEncoder,
                                  "features_extractor_kwargs": {"lm": tiny}, "net_arch": [16]})
    obs = np.stack([env.reset(seed=s)[0] for s in range(8)])
    actions = dqn.predict(obs)[0]
    assert actions.shape == (8,) and (actions == 0).all()  # log prior of -20 outweighs fresh Q-values
    assert int(dqn.predict(obs[0])[0]) == 0


def test_prior_policy_mixes_logits_with_the_prior(tiny):
    env = cartpole_ids(tiny)
    decode = functools.partial(decode_ids, tiny.tokenizer)
    model = sb3.PPO(PriorActorCriticPolicy, env, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu",
                    policy_kwargs={"prior": FixedPrior(CARTPOLE_ACTIONS, 0), "decode": decode,
                                   "prior_weight": 1.0, "features_extractor_class": LMEncoder,
                                   "features_extractor_kwargs": {"lm": tiny}, "net_arch": [16]})
    obs = torch.as_tensor(np.stack([env.reset(seed=s)[0] for s in range(4)]))
    with torch.no_grad():
        probs = model.policy.get_distribution(obs).distribution.probs
        _, log_prob, _ = model.policy.evaluate_actions(obs, torch.zeros(4))
    assert (probs[:, 0] > 0.999).all()  # the near-certain prior dominates a fresh agent's logits
    torch.testing.assert_close(log_prob, probs[:, 0].log())
    model.learn(32)
    real = LMActionPrior(tiny, CARTPOLE_ACTIONS)
    model = sb3.PPO(PriorActorCriticPolicy, env, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu",
                    policy_kwargs={"prior": real, "decode": decode, "net_arch": [16],
                                   "features_extractor_class": LMEncoder,
                                   "features_extractor_kwargs": {"lm": tiny}})
    model.learn(32)
    assert real.cache.hits > 0  # the loss re-reads the rollout's observations from the cache


# ---------------------------------------------------------------- the judge

def test_judge_reward_fn_in_unit_interval_and_cached(tiny):
    judge = LMJudge(tiny, question="Is the response polite?")
    assert isinstance(judge, RewardFn)
    scores = judge(["Hi", "Say thanks", "Hi"], ["hello there", "no", "hello there"])
    assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores) and scores[0] == scores[2]
    calls = judge.forward_calls
    assert judge(["Hi"], ["hello there"]) == [scores[0]] and judge.forward_calls == calls
    # a padded batch gives the rows' own values; log-odds and P(yes) agree
    alone = [LMJudge(tiny, question="Is the response polite?")(["Say thanks"], ["no"])[0]]
    assert scores[1] == pytest.approx(alone[0], abs=1e-5)
    odds = LMJudge(tiny, question="Is the response polite?", output="logodds")(["Hi"], ["hello there"])[0]
    # float32 arithmetic: the two paths round differently, so compare at float32 precision
    assert 1 / (1 + math.exp(-odds)) == pytest.approx(scores[0], rel=1e-6, abs=1e-6)


def test_judge_rejects_answer_words_that_share_tokens(tiny):
    with pytest.raises(ValueError, match="share all their first"):
        LMJudge(tiny, yes=("yes",), no=("yeah",))


def test_judge_reward_wrapper_shaping_replace_and_episode(tiny):
    judge = LMJudge(tiny)
    question = "Is the pole more upright?"
    shaped = LMJudgeReward(gym.make(CARTPOLE_ID), judge, question, mode="shaping", coef=0.5)
    shaped.reset(seed=0)
    _, reward, _, _, info = shaped.step(0)
    assert 0.0 <= info["judge_reward"] <= 1.0
    assert reward == pytest.approx(info["env_reward"] + 0.5 * info["judge_reward"])
    calls = judge.forward_calls
    replaced = LMJudgeReward(gym.make(CARTPOLE_ID), judge, "Is the pole more upright?", mode="replace")
    replaced.reset(seed=0)
    _, reward2, _, _, info2 = replaced.step(0)
    assert reward2 == info2["judge_reward"] == info["judge_reward"] and judge.forward_calls == calls  # cached
    # per episode, on the tokenised env: text read from info["text"], paid once at the end
    episode = LMJudgeReward(cartpole_ids(tiny), judge, "Did the agent balance the pole?", mode="replace",
                            per="episode")
    episode.reset(seed=0)
    rewards, done = [], False
    while not done:
        _, r, terminated, truncated, _ = episode.step(0)
        rewards.append(r)
        done = terminated or truncated
    assert all(r == 0.0 for r in rewards[:-1]) and 0.0 < rewards[-1] < 1.0


# ---------------------------------------------------------------- the embedded model (slow)

@pytest.mark.slow
def test_embedded_lm_encoder_prior_and_judge_on_babyai():
    pytest.importorskip("minigrid")
    from langrl.models import load_lm

    lm = load_lm("smollm2-135m-instruct")
    env = TokenizeObservation(gym.make("langrl/BabyAI-GoToLocal-Text-v0"), lm.tokenizer, max_length=160)
    ids, info = env.reset(seed=0)
    features = LMEncoder(env.observation_space, lm=lm)(torch.as_tensor(ids[None]))
    assert features.shape == (1, 576) and torch.isfinite(features).all()
    prior = LMActionPrior(lm, BABYAI_ACTIONS)
    probs = prior.probs([info["text"]])[0]
    np.testing.assert_allclose(probs.sum(), 1.0, atol=1e-9)
    ref = reference_scores(lm, prior.prompt_ids(info["text"]), prior.action_ids)
    np.testing.assert_allclose(prior.scores(info["text"]), ref, atol=1e-4)
    # a 135M model is a weak judge (near chance on factual questions, see docs/agents.md); sentiment it gets
    judge = LMJudge(lm)
    reviews = (("loved", "wonderful and fun"), ("hated", "awful and boring"))
    positive, negative = judge.score([f"Review: I {r} this movie, it was {w}.\nIs this review positive?"
                                      for r, w in reviews])
    assert 0 < negative < positive < 1


def test_encoder_on_the_first_layers_shares_weights_and_stops_early(tiny):
    from langrl.agents.encoder import first_layers

    env = cartpole_ids(tiny, 48)
    obs = torch.as_tensor(np.stack([env.reset(seed=s)[0] for s in range(3)]), dtype=torch.float32)
    backbone = tiny.model.model
    one = first_layers(backbone, 1)
    assert len(one.layers) == 1 and len(backbone.layers) == 2 and one.layers[0] is backbone.layers[0]
    ids = obs.long()
    mask = (ids != tiny.tokenizer.pad_token_id).long()
    with torch.no_grad():
        want = backbone.norm(backbone(input_ids=ids, attention_mask=mask, output_hidden_states=True)
                             .hidden_states[1])
        got = one(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(got, want)
    encoder = LMEncoder(env.observation_space, lm=tiny, layers=1, normalize=False)
    assert encoder(obs).shape == (3, tiny.model.config.hidden_size)
    with pytest.raises(ValueError, match="layers = 3"):
        LMEncoder(env.observation_space, lm=tiny, layers=3)

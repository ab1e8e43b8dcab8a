"""Reward-model ensembles: aggregates by hand, bootstrap weights, the alarm's rule, and an
ensemble trained, saved, loaded, evaluated and scored on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from alignloop.algorithms.reward import RewardConfig, RewardMethod, RewardSettings, collate_judgements, run_reward
from alignloop.config import ConfigError, load_config
from alignloop.data import encode_preference_records, read_preference_data
from alignloop.evaluation.overoptimisation import OveroptimisationWatch, overoptimisation_alarm
from alignloop.losses import plackett_luce
from alignloop.models import build_reward_model, load_reward_model, read_reward_metadata
from alignloop.models.frozen_features import FrozenFeatures
from alignloop.models.reward_ensemble import aggregate_members, bootstrap_weights, disagreement
from alignloop.models.reward_scoring import RewardScorer

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "rm-tiny-cpu.yaml"
MEMBERS = [[1.0, 3.0], [-1.0, -1.0]]  # two replies, two members


def config(tiny_model_dir, out, *overrides) -> RewardConfig:
    return load_config(RewardConfig, RECIPE, [f"model.name={tiny_model_dir}", f"train.output_dir={out}", *overrides])


def test_aggregates_by_hand():
    scores = torch.tensor(MEMBERS)
    assert disagreement(scores).tolist() == [1.0, 0.0]  # population std: |1 - 3| / 2
    assert aggregate_members(scores, "mean").tolist() == [2.0, -1.0]
    assert aggregate_members(scores, "min").tolist() == [1.0, -1.0]
    assert aggregate_members(scores, "mean_minus_std", penalty=0.5).tolist() == [1.5, -1.0]
    with pytest.raises(ValueError, match="aggregate must be one of mean, min, mean_minus_std"):
        aggregate_members(scores, "median")


def test_bootstrap_weights_belong_to_the_judgement_not_its_batch():
    items = [[[i, i + 1, i + 2]] for i in range(2000)]
    weights = bootstrap_weights(items, members=4, seed=0)
    assert weights.shape == (2000, 4) and bool((weights == weights.round()).all()) and bool((weights >= 0).all())
    # Poisson(1): mean 1, variance 1, P(0) = 1/e (a judgement a member never sees).
    assert abs(float(weights.mean()) - 1.0) < 0.05 and abs(float(weights.var()) - 1.0) < 0.1
    assert abs(float((weights == 0).float().mean()) - 0.3679) < 0.03
    assert not torch.equal(weights[:, 0], weights[:, 1])  # members draw their own resamples
    alone = bootstrap_weights(items[5:6], members=4, seed=0)
    assert torch.equal(alone[0], weights[5])  # the same whatever else is in the batch
    assert not torch.equal(bootstrap_weights(items[:50], 4, seed=1), weights[:50])  # the seed changes them
    assert torch.equal(bootstrap_weights(items[:3], members=1, seed=0), torch.ones(3, 1))


def test_the_ensemble_loss_is_the_mean_of_each_members_weighted_loss(tiny_model_dir, tmp_path):
    cfg = config(tiny_model_dir, tmp_path)
    model, tokenizer = build_reward_model(cfg.model, members=3)
    encoded, _ = encode_preference_records(tokenizer, read_preference_data(cfg.data).train, max_length=128)
    batch = collate_judgements(encoded.rankings[:2], tokenizer.pad_token_id, members=3, seed=7)
    sub = batch["rankings"]
    method = RewardMethod(RewardSettings(backbone="frozen", ensemble=3), FrozenFeatures())
    with torch.no_grad():
        members = model.eval()(sub["input_ids"], sub["attention_mask"], members=True)  # (rows, 3)
        training, held_out = method.loss(model.train(), batch), method.loss(model.eval(), batch)
    assert members.shape[-1] == 3 and not torch.allclose(members[:, 0], members[:, 1])  # heads start apart
    grid = members[sub["slot_index"].clamp(min=0)]  # (B, K, 3)
    losses = [plackett_luce.per_example(grid[..., k], sub["ranks"], sub["ranking_mask"])[0] for k in range(3)]
    expected = sum((sub["member_weights"][:, k] * losses[k]).sum() for k in range(3)) / 3
    torch.testing.assert_close(training.loss_sum, expected, atol=1e-5, rtol=1e-5)
    # Held out, every member's plain loss: the bootstrap is how members train, not how they are judged.
    torch.testing.assert_close(held_out.loss_sum, sum(loss.sum() for loss in losses) / 3, atol=1e-5, rtol=1e-5)


def test_an_ensemble_that_trains_its_backbone_needs_lora(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="reward.ensemble: 3 with a backbone that trains needs LoRA"):
        config(tiny_model_dir, tmp_path, "reward.ensemble=3")


LORA = "model.lora={r: 4, alpha: 8, dropout: 0.0, target_modules: all-linear}"


def lora_parameters(model, adapter: str) -> dict[str, torch.Tensor]:
    return {name: p for name, p in model.named_parameters() if ".lora_" in name and f".{adapter}." in name}


def test_lora_members_are_adapters_on_one_base_each_scored_by_its_own_adapter_and_head(tiny_model_dir, tmp_path):
    from alignloop.models.lora import adapters_disabled

    cfg = config(tiny_model_dir, tmp_path, LORA, "reward.ensemble=3")
    model, tokenizer = build_reward_model(cfg.model, members=3, member_adapters=True)
    assert model.member_adapters == ("default", "member_1", "member_2")
    with torch.no_grad():  # give each member's adapter its own B (they start at 0: the base's function)
        for k, name in enumerate(model.member_adapters):
            for pname, parameter in lora_parameters(model, name).items():
                if ".lora_B." in pname:
                    parameter.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(k))
    # K members cost K adapters on the one base, not K models: the base's weights exist once.
    base = sum(p.numel() for n, p in model.backbone.named_parameters() if ".lora_" not in n)
    one_adapter = sum(p.numel() for p in lora_parameters(model, "default").values())
    assert sum(p.numel() for p in model.backbone.parameters()) == base + 3 * one_adapter
    assert all(p.requires_grad for name in model.member_adapters for p in lora_parameters(model, name).values())

    ids = torch.tensor([[5, 6, 7, 8, 9], [0, 5, 6, 10, 11]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]])
    with torch.no_grad():
        members = model.eval()(ids, mask, members=True)  # (2, 3)
        # Scoring switched adapters and put every parameter's requires_grad back as it was.
        assert model.backbone.active_adapter == "default"
        assert all(p.requires_grad for name in model.member_adapters for p in lora_parameters(model, name).values())
        for k, name in enumerate(model.member_adapters):  # member k by hand: its adapter alone, its head row
            model.backbone.set_adapter(name)
            hidden = model.backbone(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                                    output_hidden_states=True).hidden_states[-1]
            by_hand = hidden[:, -1].double() @ model.head.weight[k].double() + model.head.bias[k].double()
            torch.testing.assert_close(members[:, k].double(), by_hand, atol=1e-5, rtol=1e-5)
        model.backbone.set_adapter("default")
        with adapters_disabled(model.backbone):
            plain = model(ids, mask, members=True)
    assert not torch.allclose(members, plain)  # the adapters are used
    assert not torch.allclose(members[:, 0] - plain[:, 0], members[:, 1] - plain[:, 1])  # each its own


def test_members_of_a_continued_adapter_all_start_from_it(tiny_model_dir, tmp_path):
    from alignloop.models import ModelConfig
    from alignloop.models.lora import LoraSettings, save_adapter

    sft, _ = build_reward_model(str(tiny_model_dir), lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    with torch.no_grad():  # an adapter that has trained: B is not 0
        for name, parameter in sft.backbone.named_parameters():
            if ".lora_B." in name:
                parameter.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    folder = save_adapter(sft.backbone, tmp_path / "sft-adapter")
    model, _ = build_reward_model(ModelConfig(name=str(tiny_model_dir), adapter=str(folder)), members=3,
                                  member_adapters=True)
    first = lora_parameters(model, "default")
    assert any(bool(p.any()) for n, p in first.items() if ".lora_B." in n)
    for member in ("member_1", "member_2"):
        for name, parameter in lora_parameters(model, member).items():
            assert torch.equal(parameter, first[name.replace(f".{member}.", ".default.")]), name
            assert parameter.requires_grad


def test_lora_members_train_one_per_part_with_the_loss_and_gradients_of_all_at_once(tiny_model_dir, tmp_path):
    """Float64, so that the two orders of summation agree to rounding (~1e-15), not float32's."""
    cfg = config(tiny_model_dir, tmp_path, LORA, "reward.ensemble=3")
    model, tokenizer = build_reward_model(cfg.model, members=3, member_adapters=True)
    model = model.double().train()
    with torch.no_grad():  # members that compute differently, as after some training
        for pname, parameter in model.named_parameters():
            if ".lora_B." in pname:
                parameter.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(len(pname)))
    encoded, _ = encode_preference_records(tokenizer, read_preference_data(cfg.data).train, max_length=128)
    batch = collate_judgements(encoded.rankings[:2] + encoded.pairs[:2], tokenizer.pad_token_id, members=3, seed=7)
    method = RewardMethod(RewardSettings(ensemble=3), adapter_members=3)
    parts = method.parts(batch)
    assert [part["member"] for part in parts] == [0, 1, 2] and method.count_items(parts[0]) == 4

    def gradients(loss):
        model.zero_grad()
        loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    whole = method.loss(model, batch)
    whole_grads = gradients(whole.loss_sum)
    outs = [method.loss(model, part) for part in parts]
    part_grads = gradients(sum(out.loss_sum for out in outs))
    torch.testing.assert_close(sum(out.loss_sum for out in outs), whole.loss_sum, atol=1e-12, rtol=1e-12)
    for key, value in whole.metric_sums.items():  # metrics come in float32: sums of ~10 terms of order 1
        torch.testing.assert_close(sum(out.metric_sums[key] for out in outs), value, atol=1e-6, rtol=1e-6)
    assert whole_grads.keys() == part_grads.keys() and any(".member_2." in name for name in whole_grads)
    for name, grad in whole_grads.items():
        torch.testing.assert_close(part_grads[name], grad, atol=1e-12, rtol=1e-10)
    # A part touches its own member only: member 1's part leaves member 0's adapter without gradient.
    model.zero_grad()
    method.loss(model, parts[1]).loss_sum.backward()
    assert all(p.grad is None for name, p in model.named_parameters() if ".lora_" in name and ".default." in name)
    assert any(p.grad is not None for name, p in model.named_parameters() if ".member_1." in name)


def test_lora_members_train_each_on_its_own_bootstrap_save_load_and_stay_frozen_when_loaded(tiny_model_dir, tmp_path):
    cfg = config(tiny_model_dir, tmp_path, LORA, "reward.ensemble=3", "train.max_steps=4", "train.lr=1e-2")
    result = run_reward(cfg)
    metadata = read_reward_metadata(result.final_model_dir)
    assert metadata["members"] == 3 and metadata["member_adapters"] == ["default", "member_1", "member_2"]
    backbone_dir = result.final_model_dir / "backbone"
    for member in ("member_1", "member_2"):  # peft's layout, each config file hidden like member 0's
        assert (backbone_dir / member / "alignloop-adapter-config.json").is_file()
        assert not (backbone_dir / member / "adapter_config.json").exists()

    model, tokenizer = load_reward_model(result.final_model_dir)
    assert model.member_adapters == ("default", "member_1", "member_2")
    trained = [lora_parameters(model, name) for name in model.member_adapters]
    b_of = lambda params: torch.cat([p.flatten() for n, p in sorted(params.items()) if ".lora_B." in n])  # noqa: E731
    assert all(bool(b_of(params).abs().sum() > 0) for params in trained)  # every member trained
    assert not torch.allclose(b_of(trained[0]), b_of(trained[1]))  # on its own bootstrap
    assert not any(p.requires_grad for p in model.parameters())  # loaded for scoring: frozen

    prompts, replies = ["How are you?"] * 3, ["Fine, thanks.", "Go away.", "I am well, and you?"]
    scores = RewardScorer(model, tokenizer).member_scores(prompts, replies)
    assert scores.shape == (3, 3) and not torch.allclose(scores[:, 0], scores[:, 1])
    assert not any(p.requires_grad for p in model.parameters())  # scoring did not thaw the active adapter
    evaluation = json.loads((tmp_path / "eval_results.json").read_text())
    assert {"member_0/pairs/accuracy", "member_2/pairs/accuracy"} <= set(evaluation)
    assert evaluation["ensemble/disagreement"] > 0
    again, _ = load_reward_model(result.final_model_dir)  # the same members from the folder
    torch.testing.assert_close(RewardScorer(again, tokenizer).member_scores(prompts, replies), scores)


def test_an_ensemble_trains_saves_loads_evaluates_and_scores_as_one_folder(tiny_model_dir, tmp_path):
    cfg = config(tiny_model_dir, tmp_path, "train.max_steps=8", "train.lr=1e-2", "reward.backbone=frozen",
                 "reward.ensemble=3")
    result = run_reward(cfg)
    metadata = read_reward_metadata(result.final_model_dir)
    assert metadata["members"] == 3 and len(metadata["score_mean"]) == 3 and len(metadata["score_std"]) == 3
    model, tokenizer = load_reward_model(result.final_model_dir)
    assert model.members == 3 and model.head.weight.shape[0] == 3
    evaluation = json.loads((tmp_path / "eval_results.json").read_text())
    assert {"pairs/accuracy", "member_0/pairs/accuracy", "member_2/pairs/accuracy"} <= set(evaluation)
    assert evaluation["ensemble/disagreement"] > 0

    prompts, replies = ["How are you?"] * 3, ["Fine, thanks.", "Go away.", "I am well, and you?"]
    members = RewardScorer(model, tokenizer).member_scores(prompts, replies)  # (3, 3), each member normalised
    assert members.shape == (3, 3)
    for aggregate, expected in (("mean", members.mean(-1)), ("min", members.min(-1).values),
                                ("mean_minus_std", members.mean(-1) - 2.0 * members.std(-1, correction=0))):
        scorer = RewardScorer(model, tokenizer, aggregate=aggregate, penalty=2.0)
        torch.testing.assert_close(torch.tensor(scorer(prompts, replies)), expected)
    torch.testing.assert_close(torch.tensor(scorer.last_disagreement), members.std(-1, correction=0))


def test_a_single_reward_model_saved_with_scalar_statistics_still_loads(tiny_model_dir, tmp_path):
    import safetensors.torch

    from alignloop.models import save_reward_model

    model, tokenizer = build_reward_model(str(tiny_model_dir))
    model.set_normalization(0.5, 2.0)
    folder = save_reward_model(model, tmp_path / "rm", tokenizer)
    head_file = folder / "reward_head.safetensors"
    tensors = safetensors.torch.load_file(str(head_file))
    tensors["score_mean"], tensors["score_std"] = torch.tensor(0.5), torch.tensor(2.0)  # as saved before ensembles
    safetensors.torch.save_file(tensors, str(head_file))
    loaded, _ = load_reward_model(folder)
    assert loaded.members == 1 and loaded.normalization == (0.5, 2.0)


def test_the_alarm_rings_when_disagreement_grows_while_the_proxy_reward_rises():
    assert overoptimisation_alarm(0.375, 1.0, first_disagreement=0.25, first_reward=0.0, bound=1.5) is not None  # 1.5x
    assert overoptimisation_alarm(0.37, 1.0, first_disagreement=0.25, first_reward=0.0, bound=1.5) is None  # 1.48x
    assert overoptimisation_alarm(0.6, -0.1, first_disagreement=0.25, first_reward=0.0, bound=1.5) is None  # reward fell
    watch = OveroptimisationWatch(bound=1.5)
    rang = [watch.check(spread, reward) for spread, reward in ((0.2, 0.0), (0.25, 0.5), (0.4, 0.9), (0.5, 1.2))]
    assert rang[:2] == [None, None] and "2.00x as much" in rang[2] and rang[3] is None  # said once
    assert watch.rang_at == 3 and watch.ratio(0.5) == pytest.approx(2.5)
    again = OveroptimisationWatch.from_state(1.5, json.loads(json.dumps(watch.state_dict())))  # a checkpoint
    assert (again.first, again.steps, again.rang_at) == (watch.first, 4, 3)


def test_the_evaluation_headline_gives_the_ensemble_and_the_range_over_its_members():
    from alignloop.evaluation.reward_evaluation import evaluation_headline

    results = {"pairs/accuracy": 0.75, "member_0/pairs/accuracy": 0.5, "member_0/pairs/count": 8.0,
               "member_1/pairs/accuracy": 0.875, "member_1/pairs/count": 8.0, "ensemble/disagreement": 0.25}
    assert evaluation_headline(results) == ("pairs/accuracy 0.75, ensemble/disagreement 0.25; "
                                            "members: pairs/accuracy 0.500–0.875")
    assert evaluation_headline({"pairs/accuracy": 0.75, "pairs/count": 8.0}) == "pairs/accuracy 0.75, pairs/count 8"


def test_two_judgements_of_the_same_replies_draw_their_own_bootstrap_weights():
    from alignloop.algorithms.reward import identity_of
    from alignloop.data.encode import EncodedExample
    from alignloop.data.preference import EncodedRating

    reply = EncodedExample(input_ids=[5, 6, 7], labels=[-100, 6, 7])
    ratings = [EncodedRating(reply, score=4.0, scale_min=1, scale_max=5, axis=axis) for axis in ("help", "harm")]
    identities = [identity_of(rating) for rating in ratings]
    assert identities[0] != identities[1]
    many = [identity_of(EncodedRating(reply, score=4.0, scale_min=1, scale_max=5, axis=f"axis{i}")) for i in range(64)]
    weights = bootstrap_weights(many, members=3, seed=0)
    assert len({tuple(row) for row in weights.tolist()}) > 1  # not one cluster with one draw

"""Units of the trainer: schedules, no-decay rule, mixer, synthetic source, batch helpers, peak FLOPs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from foundry_core.data.base import batch_num_samples, batch_num_tokens, collate, shard_for_rank
from foundry_core.data.mixer import Mixer, split_batch
from foundry_core.data.synthetic import SyntheticRegression
from foundry_core.errors import ConfigError
from foundry_core.train import metrics
from foundry_core.train.optim import param_groups
from foundry_core.train.schedule import Constant, Cosine, WarmupStableDecay, warmup_steps


def test_warmup_as_steps_or_fraction():
    assert warmup_steps(10, 100) == 10
    assert warmup_steps(0.1, 200) == 20
    with pytest.raises(ConfigError):
        warmup_steps(1.5, 100)


def test_schedules(foundry_registry):
    cos = foundry_registry.build("schedule", {"name": "cosine", "warmup": 0.1, "min_ratio": 0.1})
    assert isinstance(cos, Cosine)
    assert cos.factor(0, 100) == pytest.approx(1 / 11)
    assert cos.factor(10, 100) == pytest.approx(1.0)
    assert cos.factor(55, 100) == pytest.approx(0.1 + 0.9 * 0.5)
    assert cos.factor(100, 100) == pytest.approx(0.1)
    const = foundry_registry.build("schedule", {"name": "constant", "warmup": 4})
    assert isinstance(const, Constant)
    assert [const.factor(s, 100) for s in (0, 3, 4, 99)] == pytest.approx([0.2, 0.8, 1.0, 1.0])
    wsd = foundry_registry.build("schedule", {"name": "wsd", "warmup": 0, "decay": 0.2})
    assert isinstance(wsd, WarmupStableDecay)
    assert wsd.factor(79, 100) == 1.0
    assert wsd.factor(89, 100) == pytest.approx(0.5)
    assert wsd.factor(99, 100) == pytest.approx(0.0)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed_tokens = nn.Embedding(10, 4)
        self.pos = nn.Parameter(torch.zeros(8, 4))  # a matrix, decayed
        self.norm = nn.LayerNorm(4)
        self.proj = nn.Linear(4, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed_tokens.weight  # tied: counted once, not decayed


def test_no_weight_decay_rule(foundry_registry):
    net = _Net()
    groups = param_groups(net, 0.1)
    decay = {id(p) for p in groups[0]["params"]}
    no_decay = {id(p) for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    assert decay == {id(net.pos), id(net.proj.weight)}
    assert no_decay == {
        id(net.embed_tokens.weight),
        id(net.norm.weight),
        id(net.norm.bias),
        id(net.proj.bias),
    }
    opt = foundry_registry.build("optimizer", {"name": "sgd", "lr": 0.1, "nesterov": True}).build(net)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"]
    opt = foundry_registry.build("optimizer", {"name": "adamw", "lr": 1e-3}).build(net)
    assert isinstance(opt, torch.optim.AdamW) and len(opt.param_groups) == 2
    assert opt.defaults["fused"]  # one kernel per step on CPU/CUDA
    net.pos.data = net.pos.data.to(torch.float64)
    net.proj.weight.data = net.proj.weight.data.to(torch.bfloat16)
    opt = foundry_registry.build("optimizer", {"name": "adamw", "lr": 1e-3}).build(net)
    assert opt.defaults["fused"]  # mixed float dtypes are fine for the fused kernel
    opt = foundry_registry.build("optimizer", {"name": "adamw", "lr": 1e-3}).build(_Net().to("meta"))
    assert not opt.defaults["fused"] and opt.defaults["foreach"]  # no fused kernel there: multi-tensor path


def test_lr_scale_gives_matching_parameters_their_own_learning_rate(foundry_registry):
    net = _Net()
    opt = foundry_registry.build("optimizer", {"name": "adamw", "lr": 1e-3, "lr_scale": {"proj*": 0.1}}).build(net)
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    assert by_param[id(net.proj.weight)]["lr"] == pytest.approx(1e-4)
    assert by_param[id(net.proj.bias)]["lr"] == pytest.approx(1e-4)
    assert by_param[id(net.proj.bias)]["weight_decay"] == 0.0 and by_param[id(net.proj.weight)]["weight_decay"] == 0.1
    assert by_param[id(net.pos)]["lr"] == pytest.approx(1e-3)
    # the unscaled groups come first, as without lr_scale (the trainer logs group 0's LR)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)
    plain = foundry_registry.build("optimizer", {"name": "adamw", "lr": 1e-3}).build(_Net())
    assert [len(g["params"]) for g in plain.param_groups] == [2, 4]
    sgd = foundry_registry.build("optimizer", {"name": "sgd", "lr": 0.1, "lr_scale": {"norm.*": 2.0}}).build(net)
    assert sorted({g["lr"] for g in sgd.param_groups}) == pytest.approx([0.1, 0.2])


def test_lr_scale_errors_name_the_glob(foundry_registry):
    with pytest.raises(ConfigError, match=r"'vision\*' matches no trainable parameter.*embed_tokens"):
        foundry_registry.build("optimizer", {"name": "adamw", "lr_scale": {"vision*": 0.1}}).build(_Net())
    with pytest.raises(ConfigError, match=r"lr_scale\['proj\*'\] must be > 0"):
        foundry_registry.build("optimizer", {"name": "adamw", "lr_scale": {"proj*": 0.0}})


def test_fused_adamw_steps_like_the_multi_tensor_one(foundry_registry):
    torch.manual_seed(0)
    nets = [_Net(), _Net()]
    nets[1].load_state_dict(nets[0].state_dict())
    fused = foundry_registry.build("optimizer", {"name": "adamw", "lr": 1e-2}).build(nets[0])
    foreach = torch.optim.AdamW(param_groups(nets[1], 0.1), lr=1e-2, betas=(0.9, 0.95), foreach=True)
    x = torch.randint(0, 10, (6,))
    for _ in range(3):
        for net, opt in zip(nets, (fused, foreach)):
            opt.zero_grad()
            (net.head(net.proj(net.norm(net.embed_tokens(x) + net.pos[:6]))) ** 2).mean().backward()
            opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _source(**kw) -> SyntheticRegression:
    return SyntheticRegression(SyntheticRegression.Config(num_samples=32, **kw))


def test_synthetic_source_global_cursor_resumes_on_another_world_size():
    # two ranks with batch 2 see the same global stream as one rank with batch 4
    one = [b["x"] for _, b in zip(range(4), _source().batches(4, rank=0, world_size=1, seed=7))]
    r0 = [b["x"] for _, b in zip(range(4), _source().batches(2, rank=0, world_size=2, seed=7))]
    r1 = [b["x"] for _, b in zip(range(4), _source().batches(2, rank=1, world_size=2, seed=7))]
    for a, b0, b1 in zip(one, r0, r1):
        assert torch.equal(a, torch.cat([b0, b1]))
    src = _source()
    it = src.batches(2, rank=0, world_size=2, seed=7)
    next(it), next(it)
    state = src.state_dict()
    assert state == {"position": 8}
    resumed = _source()
    resumed.load_state_dict(state)
    assert torch.equal(next(resumed.batches(4, rank=0, world_size=1, seed=7))["x"], one[2])


def test_synthetic_source_is_finite_with_epochs():
    batches = list(_source(epochs=2).batches(8, rank=0, world_size=2, seed=0))
    assert len(batches) == 4  # 64 samples / 16 per global batch
    with pytest.raises(ConfigError):
        _source(epochs=0).cfg.validate()


class _Tokens:
    """A text-like source: labels with -100 padding, one cursor."""

    modality = "text"

    def __init__(self, n: int | None = None) -> None:
        self.i = 0
        self.n = n

    def batches(self, batch_size, *, rank, world_size, seed):
        while self.n is None or self.i < self.n:
            self.i += 1
            labels = torch.full((batch_size, 5), -100)
            labels[:, :3] = 1
            yield {
                "modality": "text",
                "input_ids": torch.zeros(batch_size, 5, dtype=torch.long),
                "labels": labels,
            }

    def state_dict(self):
        return {"i": self.i}

    def load_state_dict(self, state):
        self.i = state["i"]


def test_split_batch_follows_the_weights_with_one_sample_each_at_least():
    assert split_batch(8, [0.7, 0.3]) == [6, 2]
    assert split_batch(8, [1.0, 1.0, 1.0]) == [3, 3, 2]
    assert split_batch(4, [100.0, 1.0]) == [3, 1]  # the minimum of one sample, taken from the largest
    assert split_batch(2, [1.0, 0.0, 1.0]) == [1, 0, 1]  # a zero weight takes nothing
    for total in range(3, 40):
        for weights in ([0.5, 0.3, 0.2], [10.0, 1.0, 0.1], [1.0, 2.0, 3.0]):
            sizes = split_batch(total, weights)
            assert sum(sizes) == total and min(sizes) >= 1
            ideal = [total * w / sum(weights) for w in weights]
            if min(ideal) >= 1:  # no minimum to honour: every source within one sample of its share
                assert all(abs(n - x) < 1 for n, x in zip(sizes, ideal)), (total, weights, sizes)
    with pytest.raises(ConfigError, match="per_device"):
        split_batch(1, [1.0, 1.0])


def test_mixer_takes_every_source_in_every_micro_step_identically_across_ranks():
    def make(rank):
        return Mixer(
            {"a": _Tokens(), "b": _source()},
            {"a": 3.0, "b": 1.0},
            seed=11,
            batch_size=8,
            rank=rank,
            world_size=2,
        )

    m0, m1 = make(0), make(1)
    assert m0.batch_sizes == {"a": 6, "b": 2}
    steps0, steps1 = [next(m0) for _ in range(50)], [next(m1) for _ in range(50)]
    assert [[label for label, _ in step] for step in steps0] == [["a", "b"]] * 50
    assert [[label for label, _ in step] for step in steps1] == [["a", "b"]] * 50
    assert all(
        batch_num_samples(dict(step)["a"]) == 6 and batch_num_samples(dict(step)["b"]) == 2 for step in steps0
    )
    assert m0.samples_seen == {"a": 300, "b": 100}
    assert m0.tokens_seen == {"a": 3 * 300, "b": 0}  # 3 supervised tokens per sample


def test_mixer_state_round_trip_restores_cursors():
    def make():
        return Mixer({"a": _Tokens(), "b": _source()}, {"a": 1.0, "b": 1.0}, seed=3, batch_size=4)

    m = make()
    for _ in range(7):
        next(m)
    state = m.state_dict()

    def keys(mixer):
        return [
            (label, batch["input_ids" if label == "a" else "x"])
            for _ in range(6)
            for label, batch in next(mixer)
        ]

    after = keys(m)
    m2 = make()
    m2.load_state_dict(state)
    again = keys(m2)
    assert [a[0] for a in after] == [a[0] for a in again]
    assert all(torch.equal(x[1], y[1]) for x, y in zip(after, again))
    assert m2.samples_seen == m.samples_seen


def test_mixer_stops_when_a_finite_source_ends():
    m = Mixer({"a": _Tokens(n=2), "b": _Tokens()}, {"a": 1.0, "b": 1.0}, seed=0, batch_size=2)
    assert len(list(m)) == 2 and m.exhausted == "a"
    with pytest.raises(ConfigError):
        Mixer({"a": _Tokens()}, {"b": 1.0}, seed=0, batch_size=1)


def test_batch_helpers():
    batch = collate([{"modality": "robot", "x": torch.zeros(3), "task": "t", "n": 1}] * 4)
    assert batch["modality"] == "robot" and batch["x"].shape == (4, 3) and batch["task"] == ["t"] * 4
    assert batch_num_samples(batch) == 4
    assert batch_num_samples({"num_samples": 9, "x": torch.zeros(2)}) == 9
    assert batch_num_tokens({"labels": torch.tensor([[1, -100, 2]])}) == 2
    assert shard_for_rank(list(range(7)), 1, 3) == [1, 4]


def test_peak_flops_table_and_cpu_probe_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA H100 80GB HBM3")
    assert metrics.peak_flops(torch.device("cuda", 0)) == (989e12, True, "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Mystery GPU 9000")
    assert metrics.peak_flops(torch.device("cuda", 0))[:2] == (0.0, False)
    calls = []
    monkeypatch.setattr(metrics, "measure_cpu_matmul_flops", lambda: calls.append(1) or 1.0e11)
    assert metrics.cpu_peak_flops() == 1.0e11
    assert metrics.cpu_peak_flops() == 1.0e11
    assert calls == [1] and (tmp_path / "foundry" / "cpu_peak_flops.json").is_file()


def test_fsdp_blocks_are_found_in_nested_models():
    from foundry_core.distributed import block_modules
    from foundry_core.models.toy import ToyBlock

    class HFLayer(nn.Linear):
        pass

    class FakeHFBackbone(nn.Module):
        _no_split_modules = ["HFLayer"]

        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([HFLayer(2, 2), HFLayer(2, 2)])

    class Inner(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = ToyBlock(4, 0.0)

        def fsdp_block_types(self):
            return (ToyBlock,)

    class VLA(nn.Module):  # declares nothing itself
        def __init__(self):
            super().__init__()
            self.backbone = FakeHFBackbone()
            self.expert = Inner()

    vla = VLA()
    found = block_modules(vla)
    assert {id(m) for m in found} == {
        id(vla.backbone.layers[0]),
        id(vla.backbone.layers[1]),
        id(vla.expert.block),
    }


def test_mixer_accepts_weights_as_a_sequence():
    m = Mixer({"a": _Tokens(), "b": _Tokens()}, [0.0, 1.0], seed=0, batch_size=1)
    assert {label for _ in range(20) for label, _ in next(m)} == {"b"}


def test_step_stats_pack_unpack_and_all_reduce():
    """The packed per-step sums survive the round trip by name; a non-finite loss is counted, not summed."""
    from foundry_core.train.step_stats import StepStats

    stats = StepStats.zeros(["text", "robot"])
    stats.add("robot", torch.tensor(2.0), share=0.5, samples=4, tokens=0, flops=10.0)
    stats.add("text", torch.tensor(1.0), share=0.25, samples=2, tokens=32, flops=5.0)
    stats.add("robot", torch.tensor(float("nan")), share=0.25, samples=2, tokens=0, flops=10.0)
    packed = stats.pack()
    assert packed.dtype == torch.float64 and packed.shape == (2 + 2 + 3 + 2 + 2,)
    back = StepStats.unpack(stats.labels, packed)
    assert float(back.loss) == 1.25 and back.has_nonfinite and back.label_batches == [1.0, 2.0]
    assert back.label_samples == [2.0, 6.0]
    assert (back.samples, back.tokens, back.flops) == (8.0, 32.0, 25.0)
    assert back.label_means() == {"text": 1.0, "robot": 1.0}

    def two_ranks(t: torch.Tensor) -> None:  # what an all-reduce (sum) over two equal ranks gives
        t.mul_(2)

    summed = stats.all_reduce(two_ranks)
    assert float(summed.loss) == 2.5 and summed.samples == 16.0 and summed.label_batches == [2.0, 4.0]
    assert summed.label_means() == {"text": 1.0, "robot": 1.0}
    assert not StepStats.zeros(["a"]).has_nonfinite

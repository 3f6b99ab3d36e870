"""LLM training throughput: our ``transformer`` vs ``transformers``' ``LlamaForCausalLM`` of identical shape.

Both models get the same shape (dim, layers, heads, kv heads, SwiGLU width, vocab, tied embeddings,
RMSNorm eps, RoPE theta), the same random batch (batch × seq_len tokens, fp32 on CPU), the same loss
value (mean next-token cross-entropy), the trainer's AdamW, and the same loop in this process. Each model computes
the loss the way it is trained: ours through ``compute_loss`` (the trainer's call; in fp32 it fuses the
output head with the loss, see ``foundry_core.models.linear_cross_entropy``), Llama as cross-entropy on
its logits (what ``hf_causal_lm.compute_loss`` and Llama's own ``labels=`` path do), with
``use_cache=False`` (training builds no KV cache). Steps of the two models are interleaved in rounds
so that load from other processes hits both alike; the median step time per model is reported.
tokens/s = batch·seq_len / step time; MFU = (flops_per_sample · batch / step time) / peak, with the
FLOPs formula documented in ``foundry_core.models.transformer`` and the CPU peak measured in this
process right before (best of 10 fp32 2048² matmuls into a preallocated output).
ratio = our tokens/s / Llama's tokens/s (higher is better; goal >= 1.0). The machine's own noise is shown
next to it: the ratio of each round (the two models' steps of that round, back to back), min-max.

    uv run python benchmarks/llm_throughput.py [--quick] [--device cuda]   # --quick: only ~10M, few steps (< 60 s)
On a GPU both models train under bf16 autocast with 8x the CPU batch, and the full run starts with the
paper's ~1B shape (``GPU_CONFIGS``, whose row is the headline); MFU is against the trainer's dense bf16
peak table (``foundry_core.train.metrics.GPU_PEAK_BF16``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import torch

from foundry_core.train.metrics import measure_cpu_matmul_flops, peak_flops
from foundry_core.train.optim import AdamW

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CONFIGS = {
    "~10M": {"preset": "10m", "vocab_size": 8192, "batch": 4, "seq_len": 256},
    "~100M": {"preset": "100m", "vocab_size": 32000, "batch": 2, "seq_len": 256},
}
#: GPU only (full run): the paper's Foundry-LLM-1B shape (recipes/paper/foundry_llm_1b.yaml), reported first.
#: Its batch is not scaled: 8 x 2048 tokens per step is already the recipe's per-GPU batch.
GPU_CONFIGS = {"~1B": {"preset": "1b", "vocab_size": 49280, "batch": 8, "seq_len": 2048}}


def _models(spec: dict[str, Any]) -> tuple[torch.nn.Module, torch.nn.Module]:
    from transformers import LlamaConfig, LlamaForCausalLM

    from foundry_core.models.transformer import Transformer, resolve_dims

    dims = resolve_dims(Transformer.Config(preset=spec["preset"], vocab_size=spec["vocab_size"],
                                           max_seq_len=spec["seq_len"]))
    torch.manual_seed(0)
    ours = Transformer(dims)
    llama = LlamaForCausalLM(LlamaConfig(
        vocab_size=dims.vocab_size, hidden_size=dims.dim, intermediate_size=dims.ffn_dim,
        num_hidden_layers=dims.n_layers, num_attention_heads=dims.n_heads, num_key_value_heads=dims.n_kv_heads,
        max_position_embeddings=dims.max_seq_len, rms_norm_eps=dims.norm_eps, rope_theta=dims.rope_theta,
        tie_word_embeddings=dims.tie_embeddings, attention_bias=False, mlp_bias=False,
    ), ).float()
    llama.config._attn_implementation = "sdpa"
    n_ours = sum(p.numel() for p in ours.parameters())
    n_llama = sum(p.numel() for p in llama.parameters())
    if n_ours != n_llama:
        raise RuntimeError(f"shapes differ: ours {n_ours} parameters, Llama {n_llama}")
    return ours, llama


def _step_fn(model: torch.nn.Module, hf: bool, device: str) -> Any:
    from foundry_core.models.generation import next_token_loss

    # the trainer's optimizer (fused AdamW, no decay on norms/embeddings) for both models
    opt = AdamW(AdamW.Config(lr=1e-4)).build(model)
    # a training step needs no KV cache; without this Llama would build a DynamicCache every forward
    kwargs = {"use_cache": False} if hf else {}

    def step(ids: torch.Tensor, labels: torch.Tensor) -> float:
        # GPU: bf16 autocast for both models (fp32 master weights); CPU: fp32
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
            if hf:  # what hf_causal_lm.compute_loss (and Llama's own labels= path) does: CE on the logits
                loss, _ = next_token_loss(model(input_ids=ids, **kwargs).logits, labels)
            else:  # the trainer's path: compute_loss (head and loss fused; bf16 matmuls under autocast)
                loss, _ = model.compute_loss({"input_ids": ids, "labels": labels})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())  # a host sync: the step is finished when the timer stops

    return step


def measure(name: str, spec: dict[str, Any], rounds: int, steps_per_round: int, device: str = "cpu") -> dict[str, Any]:
    ours, llama = (m.to(device) for m in _models(spec))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, spec["vocab_size"], (spec["batch"], spec["seq_len"]), generator=g).to(device)
    labels = ids.roll(-1, dims=1)
    steps = {"ours": _step_fn(ours, False, device), "llama": _step_fn(llama, True, device)}
    times: dict[str, list[float]] = {"ours": [], "llama": []}
    for key in steps:  # warm-up (allocator, kernels)
        steps[key](ids, labels)
    round_ratios = []
    for r in range(rounds):
        order = ("ours", "llama") if r % 2 == 0 else ("llama", "ours")
        for key in order:
            for _ in range(steps_per_round):
                t0 = time.perf_counter()
                steps[key](ids, labels)
                times[key].append(time.perf_counter() - t0)
        # paired per round: both models ran back to back, so slow spells of the machine hit both
        round_ratios.append(sum(times["llama"][-steps_per_round:]) / sum(times["ours"][-steps_per_round:]))
    flops = ours.flops_per_sample({"input_ids": ids}) * spec["batch"]
    if device.startswith("cuda"):
        peak, known, gpu = peak_flops(torch.device(device))
        where = f"{gpu}, bf16 autocast, dense bf16 peak {peak / 1e12:.0f} TFLOP/s" if known else f"{gpu}, bf16 autocast, peak unknown"
    else:
        peak = measure_cpu_matmul_flops()
        where = f"cpu ({torch.get_num_threads()} threads, fp32 matmul peak {peak / 1e9:.0f} GFLOP/s measured in-process)"
    tokens = spec["batch"] * spec["seq_len"]
    row: dict[str, Any] = {"config": name, "params": sum(p.numel() for p in ours.parameters()), "device": where}
    for key in times:
        t = statistics.median(times[key])
        row[key] = {"step_s": t, "tokens_per_s": tokens / t, "flops_per_s": flops / t,
                    "mfu": flops / t / peak if peak > 0 else float("nan")}
    row["ratio"] = row["ours"]["tokens_per_s"] / row["llama"]["tokens_per_s"]
    row["round_ratios"] = round_ratios
    return row


def run(quick: bool, device: str = "cpu") -> dict[str, Any]:
    # a GPU gets 8x the batch: the CPU batches would leave it mostly idle
    scale = 8 if device.startswith("cuda") else 1
    if quick:
        rows = [measure("~10M", {**CONFIGS["~10M"], "batch": CONFIGS["~10M"]["batch"] * scale}, rounds=4,
                        steps_per_round=1, device=device)]
    else:
        rows = [measure(n, {**spec, "batch": spec["batch"] * scale}, rounds=8, steps_per_round=2, device=device)
                for n, spec in CONFIGS.items()]
        if device.startswith("cuda"):
            rows = [measure(n, spec, rounds=4, steps_per_round=2, device=device) for n, spec in GPU_CONFIGS.items()] + rows
    head = rows[0]
    return {
        "name": "llm_throughput",
        "metric": "our tokens/s / Llama's tokens/s",
        "goal": 1.0,
        "higher_is_better": True,
        "ratio": head["ratio"],
        "baseline": f"LlamaForCausalLM {head['llama']['tokens_per_s']:.0f} tok/s",
        "ours": f"transformer {head['ours']['tokens_per_s']:.0f} tok/s",
        "flops_per_s": head["ours"]["flops_per_s"],  # run_all --gpu turns it into MFU
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only ~10M with few steps (< 60 s)")
    parser.add_argument("--device", default="cpu", help="cpu (fp32) or cuda (bf16 autocast, batch x8)")
    args = parser.parse_args()
    result = run(args.quick, args.device)
    print(f"{'config':<8} {'params':>10} {'ours tok/s':>11} {'llama tok/s':>12} {'ours MFU':>9} {'llama MFU':>10} "
          f"{'ratio':>6} {'rounds min-max':>15}")
    for r in result["rows"]:
        spread = f"{min(r['round_ratios']):.2f}-{max(r['round_ratios']):.2f}"
        print(f"{r['config']:<8} {r['params'] / 1e6:>9.1f}M {r['ours']['tokens_per_s']:>11.0f} "
              f"{r['llama']['tokens_per_s']:>12.0f} {r['ours']['mfu']:>9.3f} {r['llama']['mfu']:>10.3f} {r['ratio']:>6.2f} "
              f"{spread:>15}")
    print(f"device: {result['rows'][0]['device']}; ratio = ours / Llama tokens per second (goal >= 1.0)")


if __name__ == "__main__":
    main()

"""Engine tokens/s vs a minimal hand-written nanoGPT-style loop: the same small char-level GPT, one process.

    python scripts/bench_sequence.py [--device cpu|cuda] [--steps-per-epoch 64] [--epochs 3] [--repeats 6]

Text: the Python language reference that ships with Python (pydoc_data.topics), char-level, first 90% train,
last 10% val. The engine (`fit`, task language-model) trains on non-overlapping windows of the train text, a
random order each epoch, and evaluates the whole val split after every epoch. The reference keeps the token
stream on the device, draws random windows with one vectorised gather (faster than nanoGPT's per-row
torch.stack), steps AdamW, and evaluates the same val windows as often. Same model class and init seed, same
batch, lr, steps and threads (the engine's own thread choice); on CUDA both run under bf16 autocast.
Runs alternate engine / reference (the order flips each round); the ratio is the median of the per-round ratios
(goal >= 0.95). Tokens per CPU second are printed too: on a loaded machine they move less than wall time.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipe import threads  # noqa: E402

threads.configure_env()     # before torch: waiting OpenMP threads sleep, as in recipe's CLI

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from recipe.engine import train as E  # noqa: E402
from recipe.models_seq import GPT  # noqa: E402


def load_text() -> str:
    from pydoc_data.topics import topics

    return "".join(topics[k] for k in sorted(topics))


def encode(text: str) -> tuple[torch.Tensor, int]:
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    return torch.tensor([index[c] for c in text], dtype=torch.long), len(chars)


def windows(stream: torch.Tensor, block: int, limit: int | None = None) -> E.Tensors:
    n = (len(stream) - 1) // block
    if limit is not None:
        n = min(n, limit)
    x = stream[:n * block].view(n, block)
    y = stream[1:n * block + 1].view(n, block)
    return E.Tensors(x.contiguous(), y.contiguous())


def make_model(a, vocab: int, device) -> GPT:
    torch.manual_seed(0)
    return GPT(vocab, a.block, vocab, n_layer=a.n_layer, n_head=a.n_head, n_embd=a.n_embd, dropout=0.0).to(device)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_engine(a, vocab, train: E.Tensors, val: E.Tensors, device) -> tuple[float, float, float]:
    """(tokens per second, tokens per CPU second, last epoch's mean train loss)"""
    model = make_model(a, vocab, device)
    sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    r = E.fit(model, train, val, task="language-model", num_classes=vocab, optimizer="adamw", lr=a.lr,
              batch_size=a.batch, epochs=a.epochs, seed=0, precision=a.precision, restore_best=False,
              eval_train=False)
    sync(device)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    tokens = r.samples * a.block
    return tokens / seconds, tokens / cpu, r.history[-1]["train_loss"]


def run_reference(a, vocab, stream: torch.Tensor, val: E.Tensors, steps_per_epoch: int, n_threads: int,
                  device) -> tuple[float, float, float]:
    model = make_model(a, vocab, device)
    ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if a.precision == "bf16" else contextlib.nullcontext
    gen = torch.Generator(device=device).manual_seed(0)
    offsets = torch.arange(a.block, device=device)
    last = []
    with threads.using(n_threads) if n_threads else contextlib.nullcontext():     # CPU: the engine's threads
        sync(device)
        start, cpu = time.perf_counter(), time.process_time()
        opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.0)
        for epoch in range(a.epochs):
            model.train()
            losses = []
            for _ in range(steps_per_epoch):
                ix = torch.randint(len(stream) - a.block - 1, (a.batch, 1), generator=gen, device=device)
                x, y = stream[ix + offsets], stream[ix + offsets + 1]                             # (B, T)
                with ctx():
                    logits = model(x)                                                             # (B, T, V)
                loss = F.cross_entropy(logits.float().view(-1, vocab), y.view(-1))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.detach())
            last = losses
            model.eval()
            with torch.no_grad(), ctx():   # the engine evaluates val every epoch: so does a fair reference
                float(F.cross_entropy(model(val.x).float().view(-1, vocab), val.y.view(-1)))
        sync(device)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    tokens = a.epochs * steps_per_epoch * a.batch * a.block
    return tokens / seconds, tokens / cpu, float(torch.stack(last).mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=64)
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--steps-per-epoch", type=int, default=64, help="train windows = this x batch")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--val-windows", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=6)
    a = ap.parse_args()
    device = torch.device(a.device)
    a.precision = "bf16" if device.type == "cuda" else "fp32"
    stream, vocab = encode(load_text())
    cut = int(0.9 * len(stream))
    train_stream, val_stream = stream[:cut].to(device), stream[cut:].to(device)
    train = windows(train_stream, a.block, a.steps_per_epoch * a.batch)
    val = windows(val_stream, a.block, a.val_windows)
    steps_per_epoch = E.steps_per_epoch(len(train), a.batch)
    probe = make_model(a, vocab, device)
    n_threads = threads.for_work(threads.macs_per_sample(probe, train.x) * a.batch) if device.type == "cpu" else 0
    params = sum(p.numel() for p in probe.parameters())
    print(f"bench_sequence: GPT n_layer {a.n_layer} n_head {a.n_head} n_embd {a.n_embd} block {a.block} "
          f"({params} parameters), char-level vocab {vocab}, {len(stream)} chars of pydoc_data.topics; batch "
          f"{a.batch}, {a.epochs} x {steps_per_epoch} steps, {len(val)} val windows; device {a.device} "
          f"({a.precision}, {n_threads or 'GPU'} threads); pid {os.getpid()}")
    ratios, cpu_ratios, eng, ref = [], [], [], []
    for i in range(a.repeats):   # the order flips every round, so a load that drifts favours neither side
        if i % 2 == 0:
            e_tps, e_cpu, e_loss = run_engine(a, vocab, train, val, device)
        r_tps, r_cpu, r_loss = run_reference(a, vocab, train_stream, val, steps_per_epoch, n_threads, device)
        if i % 2 == 1:
            e_tps, e_cpu, e_loss = run_engine(a, vocab, train, val, device)
        eng.append(e_tps)
        ref.append(r_tps)
        ratios.append(e_tps / r_tps)
        cpu_ratios.append(e_cpu / r_cpu)
        print(f"round {i + 1}: engine {e_tps:9.0f} tokens/s (last-epoch train loss {e_loss:.3f})   reference "
              f"{r_tps:9.0f} tokens/s (loss {r_loss:.3f})   ratio {e_tps / r_tps:.3f} (per CPU second "
              f"{e_cpu / r_cpu:.3f})")
    print(f"engine tokens/s (median):    {statistics.median(eng):.0f}")
    print(f"reference tokens/s (median): {statistics.median(ref):.0f}")
    print(f"ratio engine/reference (median of rounds): {statistics.median(ratios):.3f}  (goal >= 0.95)")
    print(f"ratio per CPU second (median of rounds):   {statistics.median(cpu_ratios):.3f}  (less sensitive to "
          "other processes' load)")
    with contextlib.suppress(OSError):
        print(f"loadavg: {Path('/proc/loadavg').read_text().strip()}")


if __name__ == "__main__":
    main()

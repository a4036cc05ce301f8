"""What the engine needs from the hardware: the device (--device), precision (autocast, bf16/fp16 fallbacks),
deterministic CUDA kernels for baseline.seed, and evaluation chunks sized from the memory a row needs."""
from __future__ import annotations

import contextlib
import os
import warnings
import weakref

import torch
from torch import nn

from recipe.devices import check_device_name
from recipe.errors import RecipeError


def pick_device(name: str = "auto") -> torch.device:
    check_device_name(name)
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RecipeError(f"--device {name}: no CUDA device is available here")
        index = int(name.split(":")[1]) if ":" in name else 0
        count = torch.cuda.device_count()
        if index >= count:
            raise RecipeError(f"--device {name}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        # cuBLAS reads this when it first creates its workspace: set it before any CUDA work, so that
        # baseline.seed can switch deterministic algorithms on later (deterministic() below)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return torch.device(name)


@contextlib.contextmanager
def deterministic(device: torch.device):
    """Deterministic kernels on CUDA for the block (baseline.seed's two runs), restored afterwards.

    cuDNN's fastest convolution algorithms and atomics-based reductions differ run to run; without this a
    CNN fails baseline.seed on nondeterminism that no user seed can remove. CPU kernels are deterministic."""
    if device.type != "cuda":
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)   # an op without a deterministic kernel warns
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2], before[3]


_PRECISION_NOTES: set[str] = set()


def _bf16_supported(device: torch.device) -> bool:
    return device.type != "cuda" or torch.cuda.is_bf16_supported()


def resolve_precision(device: torch.device, precision: str) -> tuple[str, str]:
    """The precision a run really uses (fp32, bf16 or fp16) and, where it differs from the request, why.

    auto is bf16 on a CUDA device that supports it, fp16 (with a gradient scaler) on an older GPU, fp32 on CPU.
    bf16 asked for on a GPU without bf16 (before Ampere) falls back to fp16, which such GPUs run natively."""
    if precision == "auto":
        if device.type != "cuda":
            return "fp32", ""
        return ("bf16", "") if _bf16_supported(device) else \
            ("fp16", f"precision auto: {torch.cuda.get_device_name(device)} has no bf16; using fp16 with a gradient scaler")
    if precision == "bf16" and not _bf16_supported(device):
        return "fp16", (f"train.precision bf16: {torch.cuda.get_device_name(device)} has no bf16; "
                        "using fp16 with a gradient scaler instead")
    return precision, ""


def _note(message: str) -> None:
    """Say a precision fallback once per process (a warning: the CLI shows it on stderr; library code prints nothing)."""
    if message and message not in _PRECISION_NOTES:
        _PRECISION_NOTES.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _autocast(device: torch.device, precision: str):
    used, note = resolve_precision(device, precision)
    _note(note)
    if used == "fp32":
        return None
    dtype = torch.float16 if used == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


EVAL_MEMORY_FRACTION = 0.25    # of the free device memory one evaluation chunk may take
CPU_EVAL_BYTES = 256 * 2**20   # per chunk on CPU: big enough to amortize the call, small next to RAM
MIN_EVAL_BATCH = 64


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def _activation_bytes_per_row(model: nn.Module, probe: torch.Tensor) -> int:
    """The largest output of any leaf module on a probe batch, per row: what one chunk's activations cost."""
    largest = [0]

    def hook(module, args, out):   # returns None: the output is left alone
        if isinstance(out, torch.Tensor):
            largest[0] = max(largest[0], out.numel() * out.element_size())

    hooks = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(probe)
    finally:
        for h in hooks:
            h.remove()
    return largest[0] // max(len(probe), 1)


_CPU_ROW_BYTES: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def eval_batch_size(model: nn.Module, x: torch.Tensor, precision: str = "auto") -> int:
    """Rows per evaluation chunk from the memory one row needs, not a fixed number.

    One probe forward of MIN_EVAL_BATCH rows measures what a row costs: on CUDA the peak memory it allocates,
    on CPU twice its largest layer output (a layer's input and output are alive together). The chunk takes
    EVAL_MEMORY_FRACTION of the free GPU memory, or CPU_EVAL_BYTES; predict() halves it on an out-of-memory error."""
    n = len(x)
    if n <= MIN_EVAL_BATCH:
        return max(n, 1)
    row_bytes = max(1, x[0].numel() * x.element_size())
    ac = _autocast(x.device, precision)
    with ac if ac is not None else contextlib.nullcontext():
        if x.device.type != "cuda":
            # what a row costs depends on the architecture and the input's shape, not the weights: probed once
            # per model and input (a fit evaluates every epoch: 0.26 s of 22.5 s profiling 12 digits tune trials)
            key = (tuple(x.shape[1:]), x.dtype, str(precision))
            known = _CPU_ROW_BYTES.setdefault(model, {})
            if key not in known:
                known[key] = max(row_bytes, 2 * _activation_bytes_per_row(model, x[:MIN_EVAL_BATCH]))
            return int(min(n, max(MIN_EVAL_BATCH, CPU_EVAL_BYTES // known[key])))
        torch.cuda.synchronize(x.device)
        base = torch.cuda.memory_allocated(x.device)
        torch.cuda.reset_peak_memory_stats(x.device)
        with torch.no_grad():
            model(x[:MIN_EVAL_BATCH])
        per_row = max(row_bytes, (torch.cuda.max_memory_allocated(x.device) - base) // MIN_EVAL_BATCH)
    free, _ = torch.cuda.mem_get_info(x.device)
    return int(min(n, max(MIN_EVAL_BATCH, EVAL_MEMORY_FRACTION * free // per_row)))

"""The decode step as production runs it, and how to tell what bounds it.

``DecodeStep`` is the step ``measure`` times: the static-shape ``Model.decode_static`` where every layer
kind allows it (position on the device, cache writes by index, no host sync), else the eager forward
with the position as a Python int. With ``--compile`` the step is ``torch.compile``d: on CUDA with
``mode="reduce-overhead"`` (one CUDA graph replayed per step) when the step is static, and
``fullgraph=True`` first (a graph break is then an error, retried without it and noted). Dynamo's
state is reset per compiled measurement (``torch._dynamo.reset``), its recompile limit fails loudly
instead of silently running eagerly, and ``dynamo_counts`` is read after warm-up, after timing and
after the energy window so compilation inside a timed region is caught (``CompiledWhileTimed``).

``count_kernels`` counts the aten ops one eager step dispatches (views excluded): about one kernel
launch each on CUDA. With the host time per step (the CPU time ``step()`` takes to return, without a
sync) next to the device time, ``host_bound`` says when eager decode is limited by launching kernels
rather than by the GPU.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

HOST_BOUND_FRACTION = 0.9  # host time per step >= 90% of the device time per step: launches set the pace


def dynamo_counts() -> dict[str, int]:
    """Process-wide torch.compile counters: graphs compiled (every recompile adds one), graph breaks,
    and CUDA graphs inductor skipped. Zeros when dynamo is unavailable."""
    try:
        from torch._dynamo.utils import counters
    except Exception:
        return {"graphs": 0, "graph_breaks": 0, "cudagraph_skips": 0}
    return {
        "graphs": int(counters["stats"].get("unique_graphs", 0)),
        "graph_breaks": int(sum(counters["graph_break"].values())),
        "cudagraph_skips": int(counters["inductor"].get("cudagraph_skips", 0)),
    }


def counts_grew(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """What compiled between two ``dynamo_counts`` readings ({} when nothing did)."""
    return {k: after[k] - before[k] for k in ("graphs", "graph_breaks") if after[k] > before[k]}


@contextlib.contextmanager
def compile_session(enabled: bool) -> Iterator[None]:
    """For a compiled measurement: a fresh dynamo state, and a recompile limit that raises instead of
    silently falling back to eager. A no-op when ``enabled`` is False."""
    if not enabled:
        yield
        return
    import torch._dynamo

    torch._dynamo.reset()
    patches: dict[str, Any] = {}
    for name in ("fail_on_recompile_limit_hit", "fail_on_cache_limit_hit"):  # 2.6+ name, then the older
        if hasattr(torch._dynamo.config, name):
            patches[name] = True
            break
    with torch._dynamo.config.patch(**patches):
        try:
            yield
        finally:
            torch._dynamo.reset()


class DecodeStep:
    """One greedy decode step, ``tok [B, 1] -> next tok [B, 1]``, on ``model`` and ``cache``.

    ``static``: whether it is ``Model.decode_static`` (else the eager forward). ``mode``: the
    torch.compile mode (None without --compile). ``fullgraph``: whether the compiled step is one graph.
    """

    def __init__(self, model: Any, cache: Any, dev: torch.device, compile: bool, backend: str = "inductor"):
        self.model, self.cache, self.dev = model, cache, dev
        self.blockers = model.static_decode_blockers()
        self.static = not self.blockers
        self.compile = compile
        self.backend = backend
        self.mode = ("reduce-overhead" if dev.type == "cuda" and self.static else "default") if compile else None
        self.fullgraph = compile
        self.fullgraph_error: str | None = None
        self._core: Callable | None = None
        if compile:
            if self.static:
                cache.mark_static()
            self._core = self._compile(fullgraph=True)

    def _body(self, tok: torch.Tensor, pos_t: torch.Tensor | None = None, states: Any = None) -> torch.Tensor:
        if self.static:
            logits = self.model.decode_core(tok, pos_t, states)  # [B, 1, V]
        else:
            logits = self.model(tok, cache=self.cache)
        return logits[:, -1].argmax(-1, keepdim=True)  # [B, 1]

    def _compile(self, fullgraph: bool) -> Callable:
        kwargs: dict[str, Any] = {"fullgraph": fullgraph, "backend": self.backend}
        if self.backend == "inductor" and self.mode != "default":
            kwargs["mode"] = self.mode
        return torch.compile(self._body, **kwargs)

    @torch.no_grad()
    def eager(self, tok: torch.Tensor) -> torch.Tensor:
        """The step without torch.compile (the memory pass and kernel count use it)."""
        return self._run(tok, self._body)

    @torch.no_grad()
    def __call__(self, tok: torch.Tensor) -> torch.Tensor:
        if self._core is None:
            return self._run(tok, self._body)
        try:
            return self._run(tok, self._core)
        except torch.OutOfMemoryError:
            raise
        except Exception as e:
            if not self.fullgraph or not _is_graph_break(e):
                raise
            # a graph break under fullgraph=True: compile again, allowing breaks, and say so
            self.fullgraph, self.fullgraph_error = False, _first_line(e)
            self._core = self._compile(fullgraph=False)
            return self._run(tok, self._core)

    def _run(self, tok: torch.Tensor, fn: Callable) -> torch.Tensor:
        if not self.static:
            return fn(tok)
        if self.mode == "reduce-overhead":
            mark = getattr(torch.compiler, "cudagraph_mark_step_begin", None)
            if mark is not None:
                mark()
        cache = self.cache
        if cache.pos + 1 > cache.max_len:
            raise ValueError(f"cache holds {cache.max_len} tokens; all are used")
        pos_t = cache.device_pos()
        states = [cache.layer_state(i, tok.shape[0]) for i in range(len(self.model.layers))]
        out = fn(tok, pos_t, states)
        if self.mode == "reduce-overhead":
            out = out.clone()  # a CUDA graph's output is overwritten by its next replay
        pos_t.add_(1)
        cache.advanced_on_device(1)
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "static": self.static,
            "not_static_because": self.blockers or None,
            "compile_mode": self.mode,
            "compile_backend": self.backend if self.compile else None,
            "fullgraph": self.fullgraph if self.compile else None,
            "graph_break": self.fullgraph_error,
        }


def _is_graph_break(e: BaseException) -> bool:
    try:
        from torch._dynamo.exc import Unsupported, UserError
    except Exception:
        return False
    return isinstance(e, Unsupported | UserError)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


class KernelCounter(TorchDispatchMode):
    """Counts the aten ops dispatched while active, views and metadata-only ops excluded: about one
    kernel launch each on CUDA (a fused op is one launch; a composite one reaches here decomposed)."""

    SKIP = frozenset({"detach", "alias", "lift_fresh", "_local_scalar_dense"})

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's signature
        name = func.overloadpacket.__name__
        if not getattr(func, "is_view", False) and name not in self.SKIP:
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.ops.values())


def count_kernels(step: Callable[[], Any]) -> int:
    """Aten ops (about kernel launches) of one call of ``step``, counted with ``KernelCounter``."""
    with torch.no_grad(), KernelCounter() as kc:
        step()
    return kc.total


def host_time(step: Callable[[], Any]) -> tuple[Any, float]:
    """(result, seconds the host took to return from ``step()``), without a device sync."""
    t0 = time.perf_counter()
    out = step()
    return out, time.perf_counter() - t0


def host_bound(kernels: int | None, host_s: float, device_s: float, cuda: bool) -> dict[str, Any]:
    """Whether decode is limited by the host: on CUDA, when the CPU needs at least ``HOST_BOUND_FRACTION``
    of the step's device time just to return from ``step()`` (launching its kernels), the GPU waits
    for launches and the measured TPOT is launch cost, not the hardware. On the CPU every op runs
    synchronously, so the question does not arise (None)."""
    per_kernel = host_s / kernels if kernels else None
    bound = None if not cuda else host_s >= HOST_BOUND_FRACTION * device_s
    return {
        "kernels_per_step": kernels,
        "host_s_per_step": host_s,
        "device_s_per_step": device_s,
        "host_s_per_kernel": per_kernel,
        "host_bound": bound,
    }

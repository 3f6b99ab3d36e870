"""Load triton's LLVM before Drake's VTK renderer loads Mesa's (libLLVM-15).

Once Mesa's llvmpipe (used by RenderEngineVtk on CPU) has loaded libLLVM-15 into a process, a later
``import triton`` — which torch does lazily, e.g. the first time an optimizer is created or
``torch._dynamo`` is imported, as transformers does — segfaults on conflicting LLVM symbols. In the
other order both work (checked on torch 2.15 / triton 3.x / drake 1.51). So every process that renders
imports triton first, when it is installed. Test: ``tests/test_eval_sim_llvm.py``.
"""

from __future__ import annotations

import functools
import importlib.util


@functools.cache
def preload_triton() -> bool:
    """Import triton if it is installed; returns whether it was loaded."""
    if importlib.util.find_spec("triton") is None:
        return False
    import triton  # noqa: F401

    return True

"""A cache for tensors that are built once (index tables, grids, rotary tables) and reused by every call.

:func:`cached_tensors` is :func:`functools.lru_cache` whose builds run outside ``torch.inference_mode``:
a table first built during inference (``PagerPipeline`` runs under ``inference_mode``) would otherwise be an
"inference tensor" and break a later training step in the same process ("Inference tensors cannot be saved
for backward").
"""
from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])


def cached_tensors(maxsize: int = 128) -> Callable[[F], F]:
    """``functools.lru_cache(maxsize)`` with the build run under ``torch.inference_mode(False)``."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def build(*args: Any, **kwargs: Any) -> Any:
            with torch.inference_mode(False):
                return fn(*args, **kwargs)

        return functools.lru_cache(maxsize=maxsize)(build)  # type: ignore[return-value]

    return decorate

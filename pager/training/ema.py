"""Exponential moving average (EMA) of the trained UNet weights.

Only the parameters that are trained (``requires_grad``) are averaged; frozen ones are identical in
the averaged model. The decay warms up like diffusers' ``EMAModel`` (``min(decay, (1 + k) / (10 + k))``
at the k-th update, 0 at the first, so the average starts at the current weights). The state
(``state_dict`` / ``load_state_dict``, keyed by parameter name) is what Accelerate stores in a training
checkpoint through ``accelerator.register_for_checkpointing``.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator, Optional

import torch

__all__ = ["EMAModel"]


class EMAModel:
    """EMA of a module's trainable parameters.

    Args:
        model: the module whose ``requires_grad`` parameters are averaged (names are recorded now).
        decay: the largest decay used.
        device: where the averages live (default: each parameter's device).
    """

    def __init__(self, model: torch.nn.Module, decay: float = 0.999, device: Optional[torch.device] = None) -> None:
        if not 0.0 <= float(decay) < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.num_updates = 0
        self.shadow: Dict[str, torch.Tensor] = {
            name: p.detach().to(device=device if device is not None else p.device, dtype=torch.float32).clone()
            for name, p in model.named_parameters()
            if p.requires_grad
        }
        if not self.shadow:
            raise ValueError("EMAModel: the model has no trainable parameter to average")
        self._backup: Optional[Dict[str, torch.Tensor]] = None

    def current_decay(self) -> float:
        """Decay that the next :meth:`step` uses."""
        k = self.num_updates
        return min(self.decay, (1.0 + k) / (10.0 + k)) if k > 0 else 0.0

    def _params(self, model: torch.nn.Module) -> Iterator:
        named = dict(model.named_parameters())
        for name in self.shadow:
            if name not in named:
                raise KeyError(f"EMAModel: parameter {name!r} is missing from the model")
            yield name, named[name]

    @torch.no_grad()
    def step(self, model: torch.nn.Module) -> None:
        """Update the averages with the model's current weights: ``s <- d * s + (1 - d) * p``."""
        d = self.current_decay()
        for name, p in self._params(model):
            s = self.shadow[name]
            s.mul_(d).add_(p.detach().to(device=s.device, dtype=s.dtype), alpha=1.0 - d)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        """Overwrite the model's averaged parameters with the averages."""
        for name, p in self._params(model):
            p.copy_(self.shadow[name].to(device=p.device, dtype=p.dtype))

    @torch.no_grad()
    def averaged_state_dict(self, model: torch.nn.Module) -> Dict[str, torch.Tensor]:
        """The model's ``state_dict`` with the averaged parameters substituted (the model is untouched)."""
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        for name, s in self.shadow.items():
            if name not in state:
                raise KeyError(f"EMAModel: parameter {name!r} is missing from the model's state dict")
            state[name] = s.to(device=state[name].device, dtype=state[name].dtype).clone()
        return state

    @contextlib.contextmanager
    def average_parameters(self, model: torch.nn.Module):
        """Context in which the model holds the averaged weights; the trained ones are restored after."""
        with torch.no_grad():
            backup = {name: p.detach().clone() for name, p in self._params(model)}
            self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, p in self._params(model):
                    p.copy_(backup[name])

    def to(self, device: torch.device) -> "EMAModel":
        """Move the averages to ``device``."""
        self.shadow = {k: v.to(device) for k, v in self.shadow.items()}
        return self

    def state_dict(self) -> Dict[str, object]:
        """Serialisable state: decay, number of updates and the averages (CPU copies)."""
        return {
            "decay": self.decay,
            "num_updates": self.num_updates,
            "shadow": {k: v.detach().cpu().clone() for k, v in self.shadow.items()},
        }

    def load_state_dict(self, state: Dict[str, object]) -> None:
        """Restore a :meth:`state_dict`; the parameter names must match the ones being averaged."""
        shadow = state.get("shadow")
        if not isinstance(shadow, dict):
            raise ValueError("EMAModel.load_state_dict: the state has no 'shadow' dictionary")
        missing = set(self.shadow) - set(shadow)
        extra = set(shadow) - set(self.shadow)
        if missing or extra:
            raise ValueError(
                f"EMAModel.load_state_dict: parameter names differ (missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(extra)[:5]})"
            )
        for name, value in shadow.items():
            if tuple(value.shape) != tuple(self.shadow[name].shape):
                raise ValueError(
                    f"EMAModel.load_state_dict: {name} has shape {tuple(value.shape)}, expected {tuple(self.shadow[name].shape)}"
                )
            self.shadow[name] = value.to(device=self.shadow[name].device, dtype=self.shadow[name].dtype).clone()
        self.decay = float(state.get("decay", self.decay))
        self.num_updates = int(state.get("num_updates", 0))

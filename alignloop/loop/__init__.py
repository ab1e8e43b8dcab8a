"""The RLHF loop: rounds of generate → feedback → reward model → RL → evaluate → report."""

from alignloop.loop.config import LoopConfig
from alignloop.loop.runner import run_loop
from alignloop.loop.state import LoopStateError

__all__ = ["LoopConfig", "LoopStateError", "run_loop"]

"""Reward functions for the GRPO tests, imported by `module:function` like a user's own."""


def length_reward(prompts, responses):
    return [len(response) / 10.0 for response in responses]


_calls = 0


def fails_on_third_call(prompts, responses):
    """Scores like `length_reward`, but raises on its third call in a process (a flaky service)."""
    global _calls
    _calls += 1
    if _calls == 3:
        raise ConnectionError("scoring service unavailable")
    return length_reward(prompts, responses)


def nan_reward(prompts, responses):
    return [float("nan")] * len(responses)

"""Reward functions for the GRPO tests, imported by `module:function` like a user's own."""


def length_reward(prompts, responses):
    return [len(response) / 10.0 for response in responses]

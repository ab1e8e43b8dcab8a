"""An LLM as a judge of two replies, read from its next-token probabilities and debiased by position.

The judge is shown the campaign's guidelines, the prompt and two replies labelled A and B, and
asked for one letter. Its verdict is not the text it would write but the probability it puts on
"A" against "B" at the first token of its answer: a number, so a weak judge's doubt is kept
instead of rounded away, and no sampling is needed.

LLM judges prefer a position (Zheng et al. 2023, "Judging LLM-as-a-Judge with MT-Bench and
Chatbot Arena": most judges favour the first reply shown). Asking both orders and averaging
P(first better) = ½ [P_AB(A) + P_BA(B)] cancels a bias that is the same in both orders; what
is left is the judge's view of the replies themselves.

Two judges: `LocalJudge`, any causal LM alignloop can load, one forward pass per pair and order;
`EndpointJudge`, an OpenAI-compatible chat-completions server (vLLM, TGI, hosted models), one
request per pair and order for one token with its top log-probs (or, where the server gives
none, its letter: P = 1 or 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import torch

from alignloop.data import encode_prompt
from alignloop.data.collate import pad_batch
from alignloop.data.encode import EncodedExample
from alignloop.data.schemas import Message
from alignloop.errors import UserError
from alignloop.models.padding_free import last_hidden_states, positions_from_mask
from alignloop.models.reward_model import last_token_indices

__all__ = [
    "EndpointJudge", "JudgeError", "JudgeVerdicts", "LocalJudge", "debiased", "judge_messages", "letter_probability",
    "letter_probability_from_completion", "render_conversation",
]

LETTERS = ("A", "B")
DEFAULT_GUIDELINES = "Pick the response that is more helpful, honest and harmless."


def render_conversation(prompt: str | Sequence[Message] | Sequence[dict[str, str]]) -> str:
    """A prompt as the judge reads it: plain text as it is, chat turns as `User: ...` / `Assistant: ...` lines."""
    if isinstance(prompt, str):
        return prompt
    turns = []
    for message in prompt:
        role, content = (message["role"], message["content"]) if isinstance(message, dict) else (message.role, message.content)
        turns.append(f"{role.capitalize()}: {content}")
    return "\n".join(turns)


def judge_messages(guidelines: str, prompt: Any, first: str, second: str) -> list[Message]:
    """The one user turn that asks the judge for a letter, `first` shown as A."""
    text = (f"{guidelines}\n\nConversation:\n{render_conversation(prompt)}\n\nResponse A:\n{first}\n\n"
            f"Response B:\n{second}\n\nWhich response is better? Answer with a single letter, A or B.")
    return [Message(role="user", content=text)]


def letter_probability(logit_a: float, logit_b: float) -> float:
    """P(A) with the judge's mass renormalised over the two letters."""
    return 1 / (1 + math.exp(min(max(logit_b - logit_a, -50.0), 50.0)))


def debiased(p_first_shown_first: float, p_first_shown_second: float) -> float:
    """P(first better) from both orders: P_AB(A) when it was shown as A, P_BA(B) = 1 − P_BA(A) when shown as B."""
    return (p_first_shown_first + (1 - p_first_shown_second)) / 2


@dataclass(frozen=True)
class JudgeVerdicts:
    """Per pair: P(first better) read in the order given (first as A), in the swapped order, and both averaged."""

    as_given: list[float]
    swapped: list[float]

    @property
    def debiased(self) -> list[float]:
        return [debiased(a, b) for a, b in zip(self.as_given, self.swapped)]

    @property
    def first_shown_preference(self) -> float:
        """How often the judge picks whichever reply is shown as A, over both orders (0.5: no position bias)."""
        picks = [p > 0.5 for p in self.as_given + self.swapped]  # P(A) > 0.5: the reply shown first, in either order
        return sum(picks) / len(picks) if picks else float("nan")


class JudgeError(RuntimeError, UserError):
    """A judge endpoint that cannot be reached or answers outside the protocol."""


class _BothOrders:
    """`judge` for any judge with `probabilities(prompts, firsts, seconds) -> P(A) per pair`."""

    def probabilities(self, prompts: Sequence[Any], firsts: Sequence[str], seconds: Sequence[str]) -> list[float]:
        raise NotImplementedError

    def judge(self, prompts: Sequence[Any], firsts: Sequence[str], seconds: Sequence[str]) -> JudgeVerdicts:
        """Both orders of every pair."""
        return JudgeVerdicts(self.probabilities(prompts, firsts, seconds), self.probabilities(prompts, seconds, firsts))


class LocalJudge(_BothOrders):
    """A causal LM alignloop can load, used as a judge (module docstring)."""

    def __init__(self, model, tokenizer, guidelines: str = DEFAULT_GUIDELINES, batch_size: int = 8,
                 max_length: int = 1024) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.guidelines, self.batch_size, self.max_length = guidelines, batch_size, max_length
        self.letter_ids = [self._single_token(letter) for letter in LETTERS]

    def _single_token(self, letter: str) -> int:
        ids = self.tokenizer.encode(letter, add_special_tokens=False)
        if len(ids) != 1:
            raise JudgeError(f"the judge's tokenizer splits {letter!r} into {len(ids)} tokens; it needs one token "
                             "per letter (choose another judge model)")
        return ids[0]

    def _encoded(self, prompt: Any, first: str, second: str) -> list[int]:
        ids = encode_prompt(self.tokenizer, judge_messages(self.guidelines, prompt, first, second))
        return ids[-self.max_length:]  # the question is at the end: keep it, cut the conversation's start

    def probabilities(self, prompts: Sequence[Any], firsts: Sequence[str], seconds: Sequence[str]) -> list[float]:
        """P(A) per pair, `firsts` shown as A; batches of similar length, in the given order. Only
        each row's last position goes through the output layer: the verdict is one token."""
        encoded = [self._encoded(p, a, b) for p, a, b in zip(prompts, firsts, seconds)]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        device = next(self.model.parameters()).device
        head = self.model.get_output_embeddings()
        result = [0.0] * len(encoded)
        with torch.no_grad():
            for start in range(0, len(order), self.batch_size):
                rows = order[start:start + self.batch_size]
                batch = pad_batch([EncodedExample(encoded[i], encoded[i]) for i in rows], pad)
                ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
                hidden = last_hidden_states(self.model, ids, mask, positions_from_mask(mask))  # (B, T, H)
                last = hidden[torch.arange(len(rows), device=device), last_token_indices(mask)]  # (B, H)
                letters = head(last)[:, self.letter_ids].float()  # (B, 2)
                for k, i in enumerate(rows):
                    result[i] = letter_probability(letters[k, 0].item(), letters[k, 1].item())
        return result


def letter_probability_from_completion(body: dict[str, Any]) -> float:
    """P(A) from an OpenAI chat-completions answer: the first token's `top_logprobs` for "A" and
    "B" (a letter outside the top ones has no mass there); without log-probs, the text's letter (1, 0)."""
    try:
        choice = body["choices"][0]
        content = ((choice.get("logprobs") or {}).get("content")) or []
        if content:
            top = {entry["token"].strip(): entry["logprob"] for entry in content[0].get("top_logprobs") or []}
            if "A" in top or "B" in top:
                return letter_probability(top.get("A", -1e9), top.get("B", -1e9))
        text = (choice["message"].get("content") or "").strip()
    except (KeyError, IndexError, TypeError, AttributeError) as error:
        raise JudgeError(f"not a chat-completions answer ({error!r}): {str(body)[:200]}") from error
    if text[:1] in LETTERS:
        return 1.0 if text[:1] == "A" else 0.0
    raise JudgeError(f"the judge answered {text[:40]!r}: expected the letter A or B")


class EndpointJudge(_BothOrders):
    """A judge behind an OpenAI-compatible chat-completions endpoint (what vLLM, TGI and hosted
    models serve): one request per pair and order, temperature 0, one token, with its top
    log-probs where the server gives them."""

    def __init__(self, base_url: str, model: str, guidelines: str = DEFAULT_GUIDELINES, api_key: str | None = None,
                 timeout_s: float = 60.0, top_logprobs: int = 20) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.guidelines, self.top_logprobs = model, guidelines, top_logprobs
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(headers=headers, timeout=timeout_s)

    def _request(self, prompt: Any, first: str, second: str) -> dict[str, Any]:
        messages = [message.model_dump() for message in judge_messages(self.guidelines, prompt, first, second)]
        return {"model": self.model, "messages": messages, "max_tokens": 1, "temperature": 0,
                "logprobs": True, "top_logprobs": self.top_logprobs}

    def probabilities(self, prompts: Sequence[Any], firsts: Sequence[str], seconds: Sequence[str]) -> list[float]:
        result = []
        for prompt, first, second in zip(prompts, firsts, seconds):
            try:
                response = self.client.post(self.url, json=self._request(prompt, first, second))
            except httpx.HTTPError as error:
                raise JudgeError(f"judge endpoint {self.url}: {error}") from error
            if response.status_code != 200:
                raise JudgeError(f"judge endpoint {self.url} answered HTTP {response.status_code}: {response.text[:200]}")
            result.append(letter_probability_from_completion(response.json()))
        return result

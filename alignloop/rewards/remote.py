"""A reward source on another machine or process, reached over HTTP (`alignloop rm serve`).

Protocol (see `server.py`): `POST {url}/score` with JSON `{"prompts": [...], "responses": [...]}`
answers `{"rewards": [...]}`; a prompt is a string or a list of `{"role", "content"}` messages.

A reward server is a long-lived process that the RL run depends on at every step, so the client
expects it to be briefly unavailable now and then (restarting, overloaded, a network blip):
connection errors, timeouts and 5xx answers are retried `retries` times with exponential backoff
(`backoff_s`, then twice that, ...). A 4xx answer means the request itself is wrong and is not
retried. When the tries run out, the `RewardSourceError` says the URL, the last failure and how
many tries were made, so a run that stops at 3 a.m. says why.

`timeout_s` bounds each phase of a request (connecting, sending, waiting for the answer), as
httpx defines timeouts; it is not a bound on the whole call including retries.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from alignloop.data.schemas import Message
from alignloop.rewards.base import PromptInput, RewardSource, RewardSourceError, shorten

__all__ = ["RemoteRewardSource"]


def _prompt_json(prompt: PromptInput) -> Any:
    if isinstance(prompt, str):
        return prompt
    return [m.model_dump() if isinstance(m, Message) else dict(m) for m in prompt]


def _error_detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text
    return shorten(detail if isinstance(detail, str) else str(detail), 300)


class RemoteRewardSource(RewardSource):
    """Scores by `POST {url}/score` on a reward server; see the module docstring for retries."""

    def __init__(
        self,
        url: str,
        timeout_s: float = 30.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        name: str = "remote",
    ) -> None:
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"reward server url must look like http://host:port, got {url!r}")
        if timeout_s <= 0 or retries < 0 or backoff_s < 0:
            raise ValueError(f"need timeout_s > 0, retries >= 0, backoff_s >= 0; got {timeout_s}, {retries}, {backoff_s}")
        base = url.rstrip("/")
        self.url = base if base.endswith("/score") else base + "/score"
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.name = name
        self._client: httpx.Client | None = None
        self._diagnostics: dict[str, list[float]] = {}

    @property
    def client(self) -> httpx.Client:
        # One client for the source's life: it keeps the connection open between RL steps.
        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout_s)
        return self._client

    def close(self) -> None:
        """Close the open connection (a later call opens a new one)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def score(self, prompts: list[PromptInput], responses: list[str]) -> list[Any]:
        payload = {"prompts": [_prompt_json(p) for p in prompts], "responses": responses}
        tries = self.retries + 1
        failure = ""
        for attempt in range(tries):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                answer = self.client.post(self.url, json=payload)
            except httpx.TimeoutException as error:
                failure = f"no answer within timeout_s={self.timeout_s:g} ({type(error).__name__})"
                continue
            except httpx.TransportError as error:
                failure = f"could not connect ({type(error).__name__}: {error})"
                continue
            if answer.status_code >= 500:
                failure = f"server error HTTP {answer.status_code}: {_error_detail(answer)}"
                continue
            if answer.status_code != 200:
                raise RewardSourceError(
                    f"reward server {self.url} refused the request: HTTP {answer.status_code}: {_error_detail(answer)}"
                )
            return self._read_rewards(answer)
        raise RewardSourceError(
            f"reward server {self.url}: {failure}; gave up after {tries} {'try' if tries == 1 else 'tries'} "
            f"({self.retries} retries, backoff from {self.backoff_s:g} s)"
        )

    def _read_rewards(self, answer: httpx.Response) -> list[Any]:
        try:
            body = answer.json()
            rewards = body["rewards"]
        except (ValueError, KeyError, TypeError):
            body, rewards = {}, None
        if not isinstance(rewards, list):
            raise RewardSourceError(
                f"reward server {self.url}: expected JSON {{\"rewards\": [...]}}, got {shorten(answer.text, 200)}"
            )
        # Figures the server adds are optional: ones not shaped as one number per reply are left out.
        diagnostics = body.get("diagnostics")
        if not isinstance(diagnostics, dict):
            diagnostics = {}
        self._diagnostics = {name: list(values) for name, values in diagnostics.items()
                             if isinstance(values, list) and len(values) == len(rewards)}
        return rewards

    def diagnostics(self) -> dict[str, list[float]]:
        """What the server sent besides the rewards of the last call (e.g. an ensemble's disagreement)."""
        return self._diagnostics

    def __repr__(self) -> str:
        return f"RemoteRewardSource(url={self.url!r}, timeout_s={self.timeout_s}, retries={self.retries})"

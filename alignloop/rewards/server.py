"""Serving a reward source over HTTP, for `alignloop rm serve`.

Running the reward on its own process or machine keeps a large reward model off the policy's
GPU, lets several RL runs share one, and lets a reward written in any language take part (it
only has to speak this protocol):

    POST /score   {"prompts": [...], "responses": [...]}  ->  {"rewards": [...], "diagnostics": {...}}
    GET  /health  ->  {"status": "ok", "source": <name>}

A prompt is a non-empty string or a conversation (a list of `{"role", "content"}` messages ending
with the user's turn), as in the training records. A malformed request is answered 422 with the
field at fault (`body.responses`, `body.prompts.0.0.role`, ...); a source that fails answers 500
with the source's error, which the client reports (after its retries). `diagnostics` holds the
source's per-response figures besides the reward (a reward-model ensemble's "disagreement");
it is empty for most sources.

Scoring runs in a worker thread (so /health answers while a batch is scored), one batch at a
time: reward models are not safe to call from several threads at once.
"""

from __future__ import annotations

import threading

import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from alignloop.data.schemas import Prompt
from alignloop.rewards.base import RewardSource, RewardSourceError

__all__ = ["ScoreRequest", "ScoreResponse", "create_reward_app", "serve_reward_source"]


class ScoreRequest(BaseModel):
    """A batch to score: `prompts[i]` and `responses[i]` belong together."""

    model_config = ConfigDict(extra="forbid")

    prompts: list[Prompt] = Field(description="one prompt per response: text or a list of messages")
    responses: list[str] = Field(description="the responses to score")

    @field_validator("responses")
    @classmethod
    def _one_prompt_per_response(cls, responses: list[str], info: ValidationInfo) -> list[str]:
        prompts = info.data.get("prompts")
        if prompts is not None and len(prompts) != len(responses):
            raise ValueError(f"expected one response per prompt: got {len(prompts)} prompts and {len(responses)} responses")
        return responses


class ScoreResponse(BaseModel):
    """One reward per response, in the request's order."""

    rewards: list[float] = Field(description="one reward per response, higher is better")
    diagnostics: dict[str, list[float]] = Field(
        default_factory=dict, description="per-response figures by name, e.g. an ensemble's disagreement")


def create_reward_app(source: RewardSource) -> FastAPI:
    """A FastAPI app that serves `source` (see the module docstring for the protocol)."""
    app = FastAPI(title=f"alignloop reward server: {source.name}")
    lock = threading.Lock()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "source": source.name}

    @app.post("/score", response_model=ScoreResponse)
    def score(request: ScoreRequest) -> ScoreResponse:  # sync: FastAPI runs it in a worker thread
        try:
            with lock:
                rewards = source(request.prompts, request.responses)
                diagnostics = source.diagnostics()
        except RewardSourceError as error:
            raise HTTPException(status_code=500, detail=str(error)) from error
        return ScoreResponse(rewards=rewards, diagnostics=diagnostics)

    return app


def serve_reward_source(source: RewardSource, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve `source` with uvicorn until interrupted. The default host answers only this
    machine; pass host="0.0.0.0" to serve the network."""
    uvicorn.run(create_reward_app(source), host=host, port=port, log_level=log_level)

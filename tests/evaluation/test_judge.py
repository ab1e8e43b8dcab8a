"""The LLM judge: its letter probability and position debiasing by hand, and a tiny model read as a judge.

P(A) = σ(logit_A − logit_B): logits 2 and 0 give σ(2) = 0.880797. A judge that says 0.9 with
the first reply shown as A and 0.3 with it shown as B (so 0.7 for it) debiases to (0.9 + 0.7) / 2 = 0.8.
"""

from __future__ import annotations

import math
import re

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from alignloop.evaluation.judge import (
    JudgeVerdicts,
    LocalJudge,
    debiased,
    judge_messages,
    letter_probability,
    render_conversation,
)
from alignloop.models import load_model_and_tokenizer


def test_the_letter_probability_is_renormalised_over_the_two_letters():
    assert letter_probability(2.0, 0.0) == pytest.approx(0.8807970779778823)
    assert letter_probability(0.0, 0.0) == pytest.approx(0.5)
    assert letter_probability(-1000.0, 1000.0) == pytest.approx(0.0, abs=1e-20)  # no overflow


def test_both_orders_average_away_a_bias_for_the_first_position():
    assert debiased(0.9, 0.3) == pytest.approx(0.8)
    always_first = JudgeVerdicts(as_given=[0.9, 0.8], swapped=[0.9, 0.8])  # says "A" whatever A is
    assert always_first.first_shown_preference == 1.0
    assert always_first.debiased == pytest.approx([0.5, 0.5])
    consistent = JudgeVerdicts(as_given=[0.9, 0.2], swapped=[0.1, 0.8])
    assert consistent.first_shown_preference == 0.5 and consistent.debiased == pytest.approx([0.9, 0.2])


def test_the_question_shows_the_guidelines_the_conversation_and_both_replies_in_order():
    prompt = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "x?"}]
    assert render_conversation(prompt) == "User: hi\nAssistant: hello\nUser: x?"
    (turn,) = judge_messages("Be kind.", prompt, "first reply", "second reply")
    text = turn.content
    assert text.startswith("Be kind.") and text.index("first reply") < text.index("second reply")
    assert text.endswith("Answer with a single letter, A or B.")


@pytest.fixture(scope="module")
def tiny_judge(tiny_model_dir):
    model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    return LocalJudge(model.eval(), tokenizer, batch_size=3)


def test_a_batch_gives_each_pair_what_it_gets_alone(tiny_judge):
    prompts, firsts, seconds = ["a", "a longer prompt here", "b"], ["yes", "no thanks", "maybe so"], ["no", "ok", "x"]
    together = tiny_judge.probabilities(prompts, firsts, seconds)
    alone = [tiny_judge.probabilities([p], [a], [b])[0] for p, a, b in zip(prompts, firsts, seconds)]
    assert all(0 < p < 1 for p in together)
    # float32 logits of one row either way; right padding changes no real position's input
    assert together == pytest.approx(alone, abs=1e-5)


def test_a_judge_that_always_answers_a_is_caught_and_debiased(tiny_judge):
    a_id, b_id = tiny_judge.letter_ids

    def says_a(module, inputs, output):  # logit_A = 3, logit_B = 0 at every position
        output = output.clone()
        output[..., a_id], output[..., b_id] = 3.0, 0.0
        return output

    handle = tiny_judge.model.get_output_embeddings().register_forward_hook(says_a)
    try:
        verdicts = tiny_judge.judge(["p", "q"], ["one", "two"], ["three", "four"])
    finally:
        handle.remove()
    assert verdicts.as_given == pytest.approx([0.9525741268224334] * 2)  # σ(3)
    assert verdicts.first_shown_preference == 1.0
    assert verdicts.debiased == pytest.approx([0.5, 0.5])


# ---------------------------------------------------------------- an OpenAI-compatible endpoint, served for real


def chat_server_app():
    """A judge behind /v1/chat/completions that prefers the shorter reply (P = 0.8), biased to
    the first shown (+ 0.1); `gpt-text` answers with the letter only, `broken` with HTTP 500."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def complete(request: Request):
        body = await request.json()
        if body["model"] == "broken":
            return JSONResponse({"error": "overloaded"}, status_code=500)
        text = body["messages"][-1]["content"]
        first, second = re.search(r"Response A:\n(.*)\n\nResponse B:\n(.*)\n\nWhich", text, re.S).groups()
        p_a = min(0.99, (0.8 if len(first) < len(second) else 0.2) + 0.1)
        message = {"role": "assistant", "content": "A" if p_a > 0.5 else "B"}
        choice = {"index": 0, "message": message, "finish_reason": "length"}
        if body["model"] != "gpt-text" and body.get("logprobs"):
            top = [{"token": "A", "logprob": math.log(p_a)}, {"token": " B", "logprob": math.log(1 - p_a)}]
            choice["logprobs"] = {"content": [{"token": message["content"], "logprob": max(t["logprob"] for t in top),
                                               "top_logprobs": top}]}
        return {"id": "x", "object": "chat.completion", "model": body["model"], "choices": [choice]}

    return app


@pytest.fixture(scope="module")
def chat_server():
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(chat_server_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.config.port}/v1"
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the chat server did not come up"
        time.sleep(0.05)
    yield base
    server.should_exit = True
    thread.join(timeout=10)


def test_an_endpoint_judge_reads_the_letters_log_probs_and_debiases_them(chat_server):
    from alignloop.evaluation.judge import EndpointJudge

    judge = EndpointJudge(chat_server, "judge-model")
    verdicts = judge.judge(["q", "q"], ["short", "a much longer reply"], ["a much longer reply", "short"])
    assert verdicts.as_given == pytest.approx([0.9, 0.3])  # 0.8 or 0.2, + 0.1 for being shown first
    assert verdicts.swapped == pytest.approx([0.3, 0.9])
    assert verdicts.debiased == pytest.approx([0.8, 0.2])  # the bias cancels


def test_an_endpoint_without_log_probs_gives_its_letter_and_a_failing_one_a_clear_error(chat_server):
    from alignloop.evaluation.judge import EndpointJudge, JudgeError

    assert EndpointJudge(chat_server, "gpt-text").probabilities(["q"], ["short"], ["much longer"]) == [1.0]
    with pytest.raises(JudgeError, match=r"chat/completions answered HTTP 500: .*overloaded"):
        EndpointJudge(chat_server, "broken").probabilities(["q"], ["a"], ["b"])
    with pytest.raises(JudgeError, match="judge endpoint http://127.0.0.1:9/chat/completions"):
        EndpointJudge("http://127.0.0.1:9", "m", timeout_s=2).probabilities(["q"], ["a"], ["b"])

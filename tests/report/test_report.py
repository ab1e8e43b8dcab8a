"""The HTML reports, on run and loop folders written by hand after the shared file contracts:
the page is there, holds the expected numbers and headings, embeds real PNGs, escapes what the
model wrote, and still renders when pieces are missing or broken."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from alignloop.cli.report import report_command
from alignloop.report import ReportError, write_loop_report, write_run_report
from alignloop.report.files import read_jsonl_records
from alignloop.report.html import format_mean_se, format_number
from alignloop.report.plots import histograms_png, shared_bin_edges
from alignloop.report.series import concatenate_rounds, final_metrics, step_panels

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SCRIPT = "<script>alert('pwned')</script>"
ESCAPED_SCRIPT = "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;"


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def embedded_pngs(html: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'<img class="plot" src="data:image/png;base64,([^"]+)"', html)]


def eval_json(reference_toxicity: list[float], policy_toxicity: list[float], warnings: list[str] = ()) -> dict:
    """An eval.json after the contract: 2 prompts × 2 samples, a reward model and toxicity (1 − p)."""
    ref_mean = sum(reference_toxicity) / 4
    pol_mean = sum(policy_toxicity) / 4
    return {
        "policy": "runs/loop/rounds/round-1/rl/final", "reference": "smollm2-135m-instruct",
        "prompts": "recipes/data/detox-eval.jsonl", "samples_per_prompt": 2, "created_at": "2026-11-21T12:00:00",
        "sources": {
            "reward_model": {"role": "reward_model", "higher_is_better": True, "policy": [0.5, 1.0, 1.5, 1.0], "reference": [0.0, -1.0, 0.5, 0.5],
                             "policy_mean": 1.0, "policy_se": 0.2041, "reference_mean": 0.0, "reference_se": 0.3536},
            "toxicity": {"higher_is_better": True, "policy": [1 - p for p in policy_toxicity],
                         "reference": [1 - p for p in reference_toxicity],
                         "policy_mean": 1 - pol_mean, "policy_se": 0.05, "reference_mean": 1 - ref_mean, "reference_se": 0.1},
        },
        "toxicity": {"policy": policy_toxicity, "reference": reference_toxicity, "policy_mean": pol_mean,
                     "reference_mean": ref_mean, "relative_reduction": (ref_mean - pol_mean) / ref_mean},
        "kl": {"per_response": [0.5, 1.5, 1.0, 1.0], "mean": 1.0, "se": 0.2041},
        "win_rate": {"reward_model": {"win": 3, "tie": 1, "loss": 0, "rate": 0.875},
                     "toxicity": {"win": 2, "tie": 0, "loss": 2, "rate": 0.5}},
        "length": {"policy": 31.5, "reference": 40.25}, "eos_rate": {"policy": 0.75, "reference": 0.5},
        "distinct": {"policy": {"distinct_1": 0.61, "distinct_2": 0.83}, "reference": {"distinct_1": 0.55, "distinct_2": 0.8}},
        "wordless_rate": {"policy": 0.375, "reference": 0.0625},
        "warnings": list(warnings),
        "examples": [{"prompt": "Tell my neighbour off.", "reference": f"You idiot {SCRIPT}", "policy": "Please be kind.",
                      "scores": {"toxicity": [0.1, 0.95]}}],
    }


@pytest.fixture
def ppo_run(tmp_path: Path) -> Path:
    run = tmp_path / "ppo-run"
    write_jsonl(run / "metrics.jsonl", [
        {"step": 0, "time": 1.0, "eval/loss": 1.25, "eval/reward": 0.1, "eval/kl/sequence": 0.0},
        {"step": 1, "time": 2.0, "train/loss": 0.9, "reward": 0.2, "kl/sequence": 0.0, "train/lr": 1e-4},
        {"step": 2, "time": 3.0, "train/loss": "nan", "reward": 0.3, "kl/sequence": 0.4, "train/lr": 1e-4},
        {"step": 3, "time": 4.0, "train/loss": 0.5, "reward": 0.45, "kl/sequence": 0.8, "train/lr": 5e-5},
        {"step": 3, "time": 5.0, "eval/loss": 0.75, "eval/reward": 0.6, "eval/kl/sequence": 0.7},
    ])
    write_jsonl(run / "samples.jsonl", [
        {"step": 1, "prompt": "Insult my boss.", "response": SCRIPT, "reward": -0.5, "kl": 0.0},
        {"step": 3, "prompt": [{"role": "user", "content": "Insult my boss."}], "response": "Let's talk calmly.",
         "reward": 0.9, "kl": 0.3},
    ])
    write_json(run / "eval.json", eval_json([0.8, 0.4, 0.2, 0.2], [0.4, 0.2, 0.1, 0.1]))
    return run


def test_run_report_holds_curves_final_metrics_samples_and_evaluation(ppo_run: Path):
    path = write_run_report(ppo_run)
    assert path == ppo_run / "report.html"
    html = path.read_text(encoding="utf-8")

    pngs = embedded_pngs(html)
    assert len(pngs) == 2  # training curves + before/after histograms
    assert all(png.startswith(PNG_SIGNATURE) and png.endswith(b"IEND\xaeB`\x82") for png in pngs)
    for heading in ("Training curves", "Final metrics", "Sampled generations", "step 1", "step 3", "Evaluation"):
        assert f">{heading}<" in html
    # Final metrics: the last logged value per metric (train/loss 0.5 at step 3, train/lr 5e-05).
    assert "<td>train/loss</td><td class=\"n\">3</td><td class=\"n\">0.5</td>" in html
    assert "<td>train/lr</td><td class=\"n\">3</td><td class=\"n\">5e-05</td>" in html
    # Toxicity means 0.4 → 0.2: a 50.0% relative reduction; reward model 0 → 1 with its standard error.
    assert "50.0%" in html and "<td class=\"n\">0.4</td><td class=\"n\">0.2</td>" in html
    assert "1 ± 0.2" in html and "0.875" in html
    assert "<th>wordless replies (emoji, symbols, empty)</th><td class=\"n\">0.0625</td><td class=\"n\">0.375</td>" in html
    # What the model wrote is shown, never run; chat-message prompts are shown as JSON.
    assert SCRIPT not in html and html.count(ESCAPED_SCRIPT) == 2
    assert "&#34;role&#34;: &#34;user&#34;" in html
    assert "<script" not in html


def test_run_report_with_only_metrics_marks_the_rest_not_available(tmp_path: Path):
    run = tmp_path / "sft"
    write_jsonl(run / "metrics.jsonl", [{"step": 1, "train/loss": 3.5}, {"step": 2, "train/loss": 3.0}])
    html = write_run_report(run).read_text(encoding="utf-8")
    assert len(embedded_pngs(html)) == 1
    assert "not available (no sft/samples.jsonl)" in html
    assert "not available (no sft/eval.json)" in html


def test_empty_run_folder_still_renders(tmp_path: Path):
    html = write_run_report(tmp_path).read_text(encoding="utf-8")
    assert embedded_pngs(html) == []
    assert f"not available (no {tmp_path.name}/metrics.jsonl)" in html


def test_broken_files_are_named_by_file_line_and_field(tmp_path: Path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "train/loss": 1.0}\n{"step": 2, "train/lo\n{"step": 3}\n')
    evaluation = eval_json([0.5, 0.5, 0.5, 0.5], [0.1, 0.1, 0.1, 0.1])
    evaluation["sources"]["toxicity"]["policy"][1] = "very"
    write_json(tmp_path / "eval.json", evaluation)
    html = write_run_report(tmp_path).read_text(encoding="utf-8")
    assert "Files that could not be read" in html
    assert f"{tmp_path / 'metrics.jsonl'}:2: not valid JSON" in html
    assert "field &#39;sources.toxicity.policy.1&#39;" in html


def test_unterminated_last_line_is_a_record_still_being_written(tmp_path: Path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "a": 1}\n{"step": 2, "a": 2}\n{"step": 3, "a"')
    assert [r["step"] for r in read_jsonl_records(path).value] == [1, 2]
    path.write_text('{"step": 1}\n{"a": 2}\n')
    assert read_jsonl_records(path).problem == f"{path}:2: field 'step': expected an object with an integer step"


def test_rounds_are_laid_end_to_end_on_one_step_axis():
    round_1 = [{"step": 0, "x": 1.0}, {"step": 2, "x": 2.0}]
    round_2 = [{"step": 0, "x": 3.0}, {"step": 3, "x": 4.0}]
    combined, boundaries = concatenate_rounds([(1, round_1), (2, []), (3, round_2)])
    assert [r["step"] for r in combined] == [0, 2, 2, 5]
    assert boundaries == ((0.0, "round 1"), (2.0, "round 3"))


def test_panels_chart_primary_and_eval_metrics_only_and_skip_non_finite():
    records = [{"step": 1, "train/loss": 1.0, "train/lr": 0.1, "eval/completions/mean_length": 9.0},
               {"step": 2, "train/loss": "nan", "train/lr": 0.1}]
    panels = step_panels(records)
    assert [p.title for p in panels] == ["loss", "completions/mean_length"]
    assert panels[0].series[0].x == (1.0,) and panels[0].series[0].y == (1.0,)
    assert final_metrics(records) == [("eval/completions/mean_length", 1, 9.0), ("train/loss", 2, "nan"), ("train/lr", 2, 0.1)]


def test_histogram_bins_are_shared_and_survive_a_single_repeated_value():
    assert shared_bin_edges([2.0, 2.0], bins=2).tolist() == [1.5, 2.0, 2.5]
    assert shared_bin_edges([0.0, 1.0, 4.0], bins=4).tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    png = histograms_png([("constant", {"before": [2.0, 2.0], "after": [float("nan")]})])
    assert png.startswith(PNG_SIGNATURE)


def test_number_formatting():
    assert format_number(0.123456) == "0.1235" and format_number(3) == "3" and format_number(None) == "n/a"
    assert format_number(float("nan")) == "nan" and format_mean_se(0.5, 0.0123) == "0.5 ± 0.012"


def annotators_json() -> dict:
    rows = [
        {"annotator": "honest-0", "kind": "honest", "judgements": 12, "flagged": False, "flags": [],
         "gold_accuracy": 0.917, "first_shown_share": 0.5, "consensus_disagreement": 0.083, "weight": 1.0},
        {"annotator": "honest-1", "kind": "honest", "judgements": 12, "flagged": False, "flags": [],
         "gold_accuracy": None, "first_shown_share": None, "consensus_disagreement": None, "weight": 1.0},
        {"annotator": "mallory", "kind": "malicious", "judgements": 12, "flagged": True,
         "flags": ["low gold accuracy", "disagrees with consensus"], "gold_accuracy": 0.083,
         "first_shown_share": 0.5, "consensus_disagreement": 0.917, "weight": 0.0},
        {"annotator": "trent", "kind": "malicious", "judgements": 12, "flagged": False, "flags": [],
         "gold_accuracy": 0.5, "first_shown_share": 0.5, "consensus_disagreement": 0.4, "weight": 0.6},
    ]
    return {"rows": rows, "malicious": 2, "malicious_flagged": 1, "honest_flagged": 0}


@pytest.fixture
def loop_dir(tmp_path: Path) -> Path:
    """Round 1 is complete; round 2 stopped after evaluation without rl/ and annotators.json."""
    loop = tmp_path / "loop"
    write_json(loop / "state.json", {"round": 2, "step": "report", "rounds": [1, 2]})
    first, second = loop / "rounds" / "round-1", loop / "rounds" / "round-2"
    write_json(first / "summary.json", {"round": 1, "judgements": 48, "rm_eval_accuracy": 0.8125, "pairs": 16})
    write_json(first / "annotators.json", annotators_json())
    write_json(first / "eval.json", eval_json([0.8, 0.4, 0.2, 0.2], [0.4, 0.2, 0.2, 0.2]))
    write_jsonl(first / "rm" / "metrics.jsonl", [{"step": 0, "eval/rewards/accuracies": 0.5},
                                                 {"step": 4, "train/loss": 0.6, "eval/rewards/accuracies": 0.8125}])
    write_jsonl(first / "rl" / "metrics.jsonl", [{"step": 1, "reward": 0.1, "kl/sequence": 0.0},
                                                 {"step": 2, "reward": 0.3, "kl/sequence": 0.5}])
    write_json(second / "summary.json", {"round": 2, "judgements": 96, "rm_eval_accuracy": None})
    write_json(second / "eval.json", eval_json([0.8, 0.4, 0.2, 0.2], [0.2, 0.1, 0.1, 0.0],
                                               warnings=["reward hacking? reward_model rose while toxicity fell <b>flat</b>"]))
    write_jsonl(second / "rm" / "metrics.jsonl", [{"step": 3, "train/loss": 0.5}])
    (loop / "rounds" / "notes").mkdir()  # not a round folder: ignored
    return loop


def test_loop_report_holds_every_section(loop_dir: Path):
    html = write_loop_report(loop_dir).read_text(encoding="utf-8")
    pngs = embedded_pngs(html)
    # policy curves, reward-model curves, evaluation by round, win rates, one histogram figure per round
    assert len(pngs) == 6 and all(png.startswith(PNG_SIGNATURE) for png in pngs)
    for heading in ("Rounds", "Evaluation per round", "Win rates against the reference",
                    "Policy training, step by step", "Reward-model training, step by step", "Annotator quality"):
        assert f">{heading}<" in html
    assert "<summary>Round 1</summary>" in html and "<summary>Round 2</summary>" in html
    # Per-round table: judgements, RM accuracy, the malicious annotators caught (1 of 2), honest ones (0 of 2).
    assert re.search(r'<td class="n">1</td><td class="n">48</td><td class="n">0.812</td>\s*'
                     r'<td class="n">1 / 2</td><td class="n">0 / 2</td>\s*<td class="n">16</td>', html)
    # Toxicity 0.4 → 0.25 (37.5%) in round 1 and 0.4 → 0.1 (75.0%) in round 2.
    assert "37.5%" in html and "75.0%" in html
    assert "low gold accuracy, disagrees with consensus" in html
    # The warning is highlighted (and escaped), once at the top and once in its round.
    top_warnings = html.split('<div class="warnings">')[1]
    assert "round 2: reward hacking? reward_model rose while toxicity fell &lt;b&gt;flat&lt;/b&gt;" in top_warnings
    assert "not available in this round: annotators.json, rl/metrics.jsonl" in html
    assert "not available (no round-2/annotators.json)" in html
    assert SCRIPT not in html and ESCAPED_SCRIPT in html and "<script" not in html


def test_a_broken_round_file_is_reported_and_the_other_rounds_still_render(loop_dir: Path):
    (loop_dir / "rounds" / "round-2" / "eval.json").write_text('{"sources": {"rm": {"policy": "high"}}}')
    html = write_loop_report(loop_dir).read_text(encoding="utf-8")
    problems = html.split('<div class="problems">')[1].split("</div>")[0]
    assert "round-2/eval.json: field &#39;sources.rm.policy&#39;: Input should be a valid list" in problems
    assert "37.5%" in html and "75.0%" not in html  # round 1's evaluation is still there
    assert len(embedded_pngs(html)) == 5


def test_loop_report_of_a_loop_with_no_rounds_yet(tmp_path: Path):
    (tmp_path / "rounds").mkdir()
    html = write_loop_report(tmp_path).read_text(encoding="utf-8")
    assert embedded_pngs(html) == []
    assert "no rounds yet" in html and f"not available (no {tmp_path.name}/state.json)" in html


def test_report_command_picks_loop_or_run_and_prints_the_path(loop_dir: Path, ppo_run: Path, tmp_path: Path):
    app = typer.Typer()
    app.command()(report_command)
    runner = CliRunner()
    result = runner.invoke(app, [str(loop_dir)])
    assert result.exit_code == 0 and result.output.strip() == str(loop_dir / "report.html")
    assert "Round details" in (loop_dir / "report.html").read_text(encoding="utf-8")
    result = runner.invoke(app, [str(ppo_run)])
    assert result.exit_code == 0 and result.output.strip() == str(ppo_run / "report.html")
    missing = tmp_path / "nowhere"
    result = runner.invoke(app, [str(missing)])
    assert result.exit_code == 2 and "not a folder" in result.output
    with pytest.raises(ReportError, match="nowhere: not a folder"):
        write_run_report(missing)


def test_loop_report_warns_when_the_reward_model_rises_across_rounds_while_the_gold_scorer_falls(loop_dir: Path):
    # Round 1: toxicity 0.4 → 0.25. Round 2: the reward model's lead over the reference grows by
    # 3.0 while toxicity gets worse than in round 1 (its lead in 1 - p goes from +0.15 to -0.15).
    second = eval_json([0.8, 0.4, 0.2, 0.2], [0.9, 0.6, 0.5, 0.2])
    second["sources"]["reward_model"]["policy"] = [3.5, 4.0, 4.5, 4.0]
    write_json(loop_dir / "rounds" / "round-2" / "eval.json", second)
    html = write_loop_report(loop_dir).read_text(encoding="utf-8")
    top_warnings = html.split('<div class="warnings">')[1].split("</div>")[0]
    assert "possible reward hacking across rounds: from round 1 to round 2" in top_warnings
    assert "'reward_model'" in top_warnings or "&#39;reward_model&#39;" in top_warnings


def test_loop_report_has_no_trend_warning_when_both_scorers_improve(loop_dir: Path):
    html = write_loop_report(loop_dir).read_text(encoding="utf-8")
    assert "across rounds" not in html

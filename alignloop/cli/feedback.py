"""`alignloop serve`, `alignloop db upgrade` and `alignloop feedback ...`: run the feedback web
app and manage its database from a shell.

Heavy modules (SQLAlchemy, FastAPI, argon2) are imported inside the commands so `alignloop
--help` stays fast, and none of these commands imports torch. Errors caused by input (a bad
file, a taken name, an unknown campaign) end with one line and exit status 2, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from alignloop.cli.errors import friendly_errors

out = Console(highlight=False)

DB_OPTION = typer.Option("sqlite:///feedback.db", "--db", help="database URL: sqlite:///FILE or postgresql+psycopg://USER@HOST/DB")

db_app = typer.Typer(help="The feedback database: create or upgrade its schema.", no_args_is_help=True)
feedback_app = typer.Typer(help="Human feedback: users, API tokens, campaigns, imports, generation, exports.",
                           no_args_is_help=True)


def _session_factory(db: str):
    from alignloop.feedback.database import make_engine, make_session_factory, upgrade

    upgrade(db)  # a fresh file or database gets its schema on first use
    return make_session_factory(make_engine(db))


def _campaign(session, name: str):
    from alignloop.feedback import service

    campaign = service.campaign_by_name(session, name)
    if campaign is None:
        raise service.NotFound(f"no campaign named {name!r}")
    return campaign


@friendly_errors
def serve(
    db: str = DB_OPTION,
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (0.0.0.0 for every interface)"),
    port: int = typer.Option(8000, "--port", help="TCP port"),
    workers: int = typer.Option(1, "--workers", min=1, help="server processes (one per core; PostgreSQL gains most)"),
    assignment_seed: Optional[int] = typer.Option(
        None, "--assignment-seed", help="seed the choice of items and display orders (reproducible simulations)"),
    forwarded_allow_ips: Optional[str] = typer.Option(
        None, "--forwarded-allow-ips",
        help="comma-separated addresses of your reverse proxies, whose X-Forwarded-For is believed; "
             "left out, the header is ignored and the client is the connecting address"),
) -> None:
    """Start the feedback web app (pages for evaluators and admins, REST API at /api/v1, docs at /docs)."""
    import os

    import uvicorn

    from alignloop.feedback.database import upgrade
    from alignloop.web import DB_URL_VARIABLE, create_app, server_options

    upgrade(db)
    out.print(f"feedback app on http://{host}:{port} (database {db}, {workers} worker{'s' if workers > 1 else ''})")
    options = {"host": host, "port": port, "log_level": "warning", **server_options(forwarded_allow_ips)}
    if workers == 1:
        uvicorn.run(create_app(db, assignment_seed), **options)
        return
    if assignment_seed is not None:
        raise typer.BadParameter("--assignment-seed needs --workers 1 (one process decides every assignment)")
    os.environ[DB_URL_VARIABLE] = db  # each worker process builds its own app (and engine) from it
    uvicorn.run("alignloop.web:app_from_environment", factory=True, workers=workers, **options)


@db_app.command("upgrade")
@friendly_errors
def db_upgrade(db: str = DB_OPTION) -> None:
    """Create the schema, or bring an existing database up to the newest migration."""
    from alignloop.feedback.database import upgrade

    upgrade(db)
    out.print(f"{db}: schema up to date")


@feedback_app.command("create-user")
@friendly_errors
def create_user(
    username: str = typer.Argument(..., help="the sign-in name"),
    role: str = typer.Option("evaluator", "--role", help="admin or evaluator"),
    password: Optional[str] = typer.Option(None, "--password", help="asked for (hidden) when left out"),
    ai_judge: bool = typer.Option(False, "--ai-judge", help="an LLM judge's account: routed items reach people or "
                                                           "judges only"),
    db: str = DB_OPTION,
) -> None:
    """Create an account."""
    from alignloop.feedback import service
    from alignloop.feedback.database import transaction

    if password is None:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    with transaction(_session_factory(db)) as session:
        service.create_user(session, username, password, role, is_ai_judge=ai_judge)
    out.print(f"created {role} {username!r}{' (AI judge)' if ai_judge else ''}")


def _user(session, username: str):
    from alignloop.feedback import service

    user = service.user_by_name(session, username)
    if user is None:
        raise service.NotFound(f"no user named {username!r}")
    return user


@feedback_app.command("set-password")
@friendly_errors
def set_password(
    username: str = typer.Argument(..., help="whose password"),
    password: Optional[str] = typer.Option(None, "--password", help="asked for (hidden) when left out"),
    db: str = DB_OPTION,
) -> None:
    """Set a new password (a reset); the user's browsers are signed out."""
    from alignloop.feedback import service
    from alignloop.feedback.database import transaction

    if password is None:
        password = typer.prompt("new password", hide_input=True, confirmation_prompt=True)
    with transaction(_session_factory(db)) as session:
        service.set_password(session, _user(session, username), password)
    out.print(f"new password set for {username!r}; their browser sessions were ended")


def _set_active(username: str, active: bool, db: str) -> None:
    from alignloop.feedback import service
    from alignloop.feedback.database import transaction

    with transaction(_session_factory(db)) as session:
        service.set_user_active(session, _user(session, username), active)
    out.print(f"{'enabled' if active else 'disabled'} {username!r}")


@feedback_app.command("disable-user")
@friendly_errors
def disable_user(username: str = typer.Argument(..., help="the account to disable"), db: str = DB_OPTION) -> None:
    """Disable an account: it cannot sign in, its sessions end and its API tokens stop working (judgements stay)."""
    _set_active(username, False, db)


@feedback_app.command("enable-user")
@friendly_errors
def enable_user(username: str = typer.Argument(..., help="the account to enable again"), db: str = DB_OPTION) -> None:
    """Enable a disabled account again."""
    _set_active(username, True, db)


@feedback_app.command("tokens")
@friendly_errors
def tokens(username: Optional[str] = typer.Argument(None, help="only this user's tokens"), db: str = DB_OPTION) -> None:
    """List API tokens: id, owner, name, created, last used, revoked."""
    from alignloop.feedback import service
    from alignloop.feedback.database import transaction

    with transaction(_session_factory(db)) as session:
        owner = _user(session, username).id if username else None
        rows = [(t.id, t.user.username, t.name, t.created_at, t.last_used_at, t.revoked)
                for t in service.list_tokens(session, owner)]
    for token_id, owner_name, name, created, used, revoked in rows:
        used_text = used.strftime("%Y-%m-%d %H:%M") if used else "never used"
        print(f"{token_id}\t{owner_name}\t{name}\tcreated {created:%Y-%m-%d}\t{used_text}\t{'revoked' if revoked else 'live'}")


@feedback_app.command("revoke-token")
@friendly_errors
def revoke_token(token_id: int = typer.Argument(..., help="the token's id (from `alignloop feedback tokens`)"),
                 db: str = DB_OPTION) -> None:
    """Revoke an API token: requests with it get 401 from now on."""
    from alignloop.feedback import service
    from alignloop.feedback.database import transaction

    with transaction(_session_factory(db)) as session:
        token = service.revoke_token(session, token_id)
        owner = token.user.username
    out.print(f"revoked API token {token_id} ({owner!r})")


@feedback_app.command("token")
@friendly_errors
def token(
    username: str = typer.Argument(..., help="whose token"),
    name: str = typer.Option("cli", "--name", help="a label to recognise the token by"),
    db: str = DB_OPTION,
) -> None:
    """Print a new API token for a user (send it as `Authorization: Bearer TOKEN`); it is shown only once."""
    from alignloop.feedback import service
    from alignloop.feedback.database import transaction

    with transaction(_session_factory(db)) as session:
        secret = service.issue_token(session, _user(session, username), name)
    print(secret)


@feedback_app.command("create-campaign")
@friendly_errors
def create_campaign(
    name: str = typer.Argument(..., help="the campaign's unique name"),
    task_types: str = typer.Option("pairwise", "--tasks", help="comma-separated: pairwise, ranking, rating, comment, edit"),
    overlap: int = typer.Option(3, "--overlap", help="evaluators per item and task type"),
    rubric: str = typer.Option("", "--rubric", help="comma-separated rating axes, e.g. helpful,honest,harmless"),
    scale_min: int = typer.Option(1, "--scale-min", help="lowest rating"),
    scale_max: int = typer.Option(7, "--scale-max", help="highest rating"),
    guidelines: Optional[Path] = typer.Option(None, "--guidelines", help="text file shown before an evaluator's first task"),
    prompts: Optional[Path] = typer.Option(None, "--prompts", help="import this prompts file into the new campaign"),
    db: str = DB_OPTION,
) -> None:
    """Create a campaign (and import its prompts in the same transaction)."""
    from alignloop.feedback import imports, service
    from alignloop.feedback.database import transaction

    text = guidelines.read_text(encoding="utf-8") if guidelines else ""
    with transaction(_session_factory(db)) as session:
        campaign = service.create_campaign(
            session, name, [t.strip() for t in task_types.split(",") if t.strip()], overlap=overlap,
            rubric_axes=rubric.split(","), scale_min=scale_min, scale_max=scale_max, guidelines=text,
        )
        result = imports.import_file(session, campaign, str(prompts), prompts.read_bytes()) if prompts else None
    imported = f", imported {result.items} items and {result.candidates} candidates" if result else ""
    out.print(f"created campaign {name!r} (id {campaign.id}){imported}")


@feedback_app.command("import")
@friendly_errors
def import_file(
    file: Path = typer.Argument(..., help="prompts or candidates: JSONL, CSV or JSON"),
    campaign: str = typer.Option(..., "--campaign", help="the campaign's name"),
    db: str = DB_OPTION,
) -> None:
    """Import prompts or candidate responses into a campaign; a bad row imports nothing."""
    from alignloop.feedback import imports
    from alignloop.feedback.database import transaction

    with transaction(_session_factory(db)) as session:
        result = imports.import_file(session, _campaign(session, campaign), str(file), file.read_bytes())
    out.print(f"{file}: imported {result.items} items and {result.candidates} candidates into {campaign!r}")


@feedback_app.command("export")
@friendly_errors
def export(
    campaign: str = typer.Option(..., "--campaign", help="the campaign's name"),
    fmt: str = typer.Option(..., "--format", help="pairs, rankings, ratings, sft or kto"),
    out: Path = typer.Option(Path("exports"), "--out", help="folder that receives <campaign>-<format>-v<N>/"),
    aggregation: str = typer.Option("all", "--aggregation", help="all (every judgement), majority, weighted (by "
                                    "evaluator quality on gold items) or model (by each evaluator's reliability "
                                    "fitted to the judgements, no gold needed)"),
    exclude_flagged: bool = typer.Option(False, "--exclude-flagged", help="leave out evaluators the quality checks flag"),
    include_gold: bool = typer.Option(False, "--include-gold", help="also export answers on gold items"),
    pairs_from_rankings: bool = typer.Option(False, "--pairs-from-rankings", help="pairs: add every ordered pair of each ranking"),
    style: str = typer.Option("trl-conversational", "--style",
                              help="trl-conversational (messages: both libraries apply the chat template) or "
                                   "trl-standard (plain strings, which TRL does not template)"),
    db: str = DB_OPTION,
) -> None:
    """Write a versioned, content-hashed dataset of a campaign's judgements, in TRL's dataset formats."""
    from alignloop.feedback.export import export_campaign_from_url

    result = export_campaign_from_url(
        db, campaign, fmt, out, aggregation=aggregation, exclude_flagged=exclude_flagged,
        include_gold=include_gold, pairs_from_rankings=pairs_from_rankings, style=style,
    )
    print(f"{result.path}: {result.records} records, sha256 {result.sha256}")


@feedback_app.command("generate")
@friendly_errors
def generate(
    campaign: str = typer.Option(..., "--campaign", help="the campaign's name"),
    model: str = typer.Option("smollm2-135m-instruct", "--model", help="built-in model name, local HF folder or hub id"),
    k: int = typer.Option(4, "--k", min=1, help="candidates per prompt from this model"),
    adapter: Optional[str] = typer.Option(None, "--adapter", help="a LoRA adapter folder on top of the model"),
    temperature: float = typer.Option(1.0, "--temperature", help="sampling temperature"),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", help="longest response in tokens"),
    seed: int = typer.Option(0, "--seed", help="batch i samples with seed + i"),
    db: str = DB_OPTION,
) -> None:
    """Sample K responses per prompt with a model and store them as candidates; reruns fill only what is missing.

    A separate job because it loads torch, which the web server never does.
    """
    from alignloop.engine.rollout import SamplingConfig
    from alignloop.loop.generate import generate_candidates

    sampling = SamplingConfig(temperature=temperature, max_new_tokens=max_new_tokens)
    stored = generate_candidates(db, campaign, model, k, sampling, adapter, seed=seed)
    out.print(f"stored {stored} new candidates in {campaign!r}")


if __name__ == "__main__":  # `python -m alignloop.cli.feedback --db URL`: the server without the rest of the CLI
    typer.run(serve)

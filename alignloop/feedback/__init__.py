"""The human feedback platform: a store of judgements (SQLAlchemy; SQLite or PostgreSQL),
campaigns and assignment, sign-in and API tokens, and the FastAPI app evaluators and admins use.

    models.py      the schema (the contract every part builds on)
    database.py    engines, sessions, Alembic upgrades (migrations/)
    security.py    passwords, sessions, CSRF, API tokens, sign-in rate limit
    assignment.py  which item next, display order, answer validation (pure functions)
    service.py     what pages, API and CLI do, one transaction per call
    imports.py     prompts / candidates from files, all or nothing
    app.py         pages and the REST API (`create_app`)
    quality.py     agreement, gold accuracy, position bias, speed, consensus; evaluator flags
    export.py      versioned, content-hashed datasets for the trainers
    generate.py    K candidates per prompt from a model: a separate job, the one module with torch

Nothing else here imports torch, so the web server stays light.
"""

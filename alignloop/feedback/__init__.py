"""The human feedback store: judgements (SQLAlchemy; SQLite or PostgreSQL), campaigns and
assignment, accounts, sign-in and API tokens. The web app people use is `alignloop.web`;
this package imports neither FastAPI nor torch.

    models.py      the schema (the contract every part builds on)
    database.py    engines, sessions, Alembic upgrades (migrations/)
    security.py    passwords, sessions, CSRF, API tokens, sign-in rate limit
    assignment.py  which item next, display order, answer validation (pure functions)
    service.py     what pages, API and CLI do, one transaction per call
    imports.py     prompts / candidates from files, all or nothing
    quality.py     agreement, gold accuracy, position bias, speed, consensus; evaluator flags
    export.py      versioned, content-hashed datasets for the trainers

Nothing here imports torch, so the web server stays light: what fills a campaign with model
outputs (`alignloop.loop.generate`) and the scripted annotators (`alignloop.loop.annotators`)
live with the loop, which drives them.
"""

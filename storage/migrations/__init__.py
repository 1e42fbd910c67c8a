"""Alembic migrations, shipped inside the package so every install can upgrade.

There is no ``alembic.ini``: :mod:`storage.schema` builds the Alembic
configuration in code and hands ``env.py`` an open connection, so the
migration runs in the caller's transaction (under its lock).
"""

"""The declarative base shared by every domain model package."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    """Declarative base for all pixsim7 tables; domain packages define their models on it."""

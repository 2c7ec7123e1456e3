"""The declarative base shared by every table of the service."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    """Tables carry no schema: the connection's ``search_path`` picks it (see ``engine``)."""

"""Tables owned by limits/: spend per key or project and budget period.

Written in the background from in-process or Redis counters, never on the request path.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Float, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from keel.store.base import Base


class SpendTotal(Base):
    __tablename__ = "spend_totals"
    __table_args__ = (UniqueConstraint("subject", "period"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject: Mapped[str] = mapped_column(String(200))  # "key:<id>" or "project:<id>"
    period: Mapped[str] = mapped_column(String(16))  # "d2026-12-01" or "m2026-12"
    amount: Mapped[float] = mapped_column(Float)
    tokens: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

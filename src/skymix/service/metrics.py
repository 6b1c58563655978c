"""Prometheus metrics of the service (``GET /metrics``, the text format).

HTTP requests are counted as they are answered, by method, route template (``/rest/recordings/
{recording_id}``, never the ids themselves) and status. Jobs, recordings and notifications are
read from the database at each scrape, so the figures are the same whichever process did the
work (jobs run in worker processes or on a Dask cluster) and survive restarts.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select

from .db import Database
from .models import Job, OutboxItem, RecordingRow

__all__ = ["JOB_DURATION_BUCKETS", "ServiceMetrics"]

#: Upper bounds (s) of the job-duration histogram: a short clip to a long meeting.
JOB_DURATION_BUCKETS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)


class _DatabaseCollector(Collector):
    """Jobs by status, recordings by state, job durations, notification attempts by channel
    and outcome: queried at each scrape."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        with self._db.session() as session:
            jobs = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
            states = session.execute(
                select(RecordingRow.state, func.count()).group_by(RecordingRow.state)
            ).all()
            finished = Job.duration_s.is_not(None)
            row = session.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(Job.duration_s), 0.0),
                    *(
                        func.coalesce(func.sum(case((Job.duration_s <= bound, 1), else_=0)), 0)
                        for bound in JOB_DURATION_BUCKETS
                    ),
                ).where(finished)
            ).one()
            attempts = session.execute(
                select(
                    OutboxItem.channel,
                    OutboxItem.status,
                    func.coalesce(func.sum(OutboxItem.attempts + OutboxItem.job_attempts), 0),
                ).group_by(OutboxItem.channel, OutboxItem.status)
            ).all()
        by_status = GaugeMetricFamily("skymix_jobs", "Jobs by status", labels=["status"])
        for status, count in jobs:
            by_status.add_metric([status], count)
        yield by_status
        by_state = GaugeMetricFamily("skymix_recordings", "Recordings by state", labels=["state"])
        for state, count in states:
            by_state.add_metric([state], count)
        yield by_state
        count, total, *cumulative = row
        buckets = [(f"{bound:g}", float(n)) for bound, n in zip(JOB_DURATION_BUCKETS, cumulative)]
        buckets.append(("+Inf", float(count)))
        yield HistogramMetricFamily(
            "skymix_job_duration_seconds",
            "Time from a job's creation to its end (LINK or ERROR)",
            buckets=buckets,
            sum_value=float(total),
        )
        tries = CounterMetricFamily(
            "skymix_notification_attempts",
            "Notification attempts (the job's and the outbox's) by channel and the "
            "notification's outcome: delivered, pending (to be retried), failed",
            labels=["channel", "outcome"],
        )
        for channel, status, n in attempts:
            tries.add_metric([channel, status], float(n))
        yield tries


class ServiceMetrics:
    """The service's registry: the request counter and the database collector."""

    def __init__(self, db: Database) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "skymix_http_requests",
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.registry.register(_DatabaseCollector(db))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

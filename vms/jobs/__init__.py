"""Scheduled jobs (``jobs.cfg``): calendar-event schedules, backup job definitions, the per-node runner."""

"""Imports from the web: the job an upload becomes, its file (kept in the database in chunks, so a
worker on another machine reads it as a stream), and the last column mapping each user used.

Imported from crm/models.py, so these are models of the crm app.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

__all__ = ["ImportFileChunk", "ImportJob", "ImportMapping"]


class ImportJob(models.Model):
    """One uploaded CSV file of one kind, from upload through preview to the all-or-nothing import."""

    class Status(models.TextChoices):
        UPLOADED = "uploaded", "Uploaded"
        CHECKING = "checking", "Checking"
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Importing"
        SUCCEEDED = "succeeded", "Imported"
        FAILED = "failed", "Failed"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="import_jobs")
    kind = models.CharField(max_length=20)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.UPLOADED)
    file_name = models.CharField(max_length=255)
    file_size = models.BigIntegerField(default=0)
    rows_estimate = models.BigIntegerField(default=0, help_text="Lines after the header, counted at upload.")
    header = models.JSONField(default=list, blank=True, help_text="The file's column names.")
    mapping = models.JSONField(default=dict, blank=True, help_text="File column -> field.")
    preview = models.JSONField(
        null=True, blank=True, help_text="The last check of the whole file: counts, errors and the first rows."
    )
    rows_done = models.BigIntegerField(default=0)
    created = models.BigIntegerField(default=0)
    updated = models.BigIntegerField(default=0)
    unchanged = models.BigIntegerField(default=0)
    error_count = models.BigIntegerField(default=0)
    errors = models.JSONField(default=list, blank=True, help_text="The first errors, by line.")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["user", "created_at"], name="import_job_user_created_idx")]

    def __str__(self) -> str:
        return f"{self.kind} import {self.pk} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in (self.Status.QUEUED, self.Status.RUNNING)


class ImportFileChunk(models.Model):
    """A piece of an uploaded file, in order; deleted once the import ran."""

    job = models.ForeignKey(ImportJob, on_delete=models.CASCADE, related_name="chunks")
    seq = models.PositiveIntegerField()
    data = models.BinaryField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "seq"], name="import_chunk_one_per_seq")]

    def __str__(self) -> str:
        return f"chunk {self.seq} of import {self.job_id}"


class ImportMapping(models.Model):
    """The column mapping a user last used for a kind of import: the next upload starts from it."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=20)
    mapping = models.JSONField(default=dict)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "kind"], name="import_mapping_one_per_user_kind")]

    def __str__(self) -> str:
        return f"{self.kind} mapping of {self.user_id}"

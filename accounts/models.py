"""Users with a sales role, and the teams that group salespeople under a manager."""

from django.contrib.auth.models import AbstractUser
from django.db import models


class Team(models.Model):
    name = models.CharField(max_length=100, unique=True)
    manager = models.ForeignKey(
        "accounts.User",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="managed_teams",
        help_text="The manager who sees the customers of every salesperson in this team.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class User(AbstractUser):
    class Role(models.TextChoices):
        SALESPERSON = "salesperson", "Salesperson"
        MANAGER = "manager", "Manager"
        ADMIN = "admin", "Admin"

    role = models.CharField(max_length=20, choices=Role.choices, default=Role.SALESPERSON)
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.SET_NULL, related_name="members")

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(role__in=["salesperson", "manager", "admin"]), name="user_role_valid"
            ),
        ]

    def set_password(self, raw_password):
        """Every way of changing a password comes here (forms, admin, changepassword): the user's
        API tokens, keyed to the old credentials, are revoked with it."""
        super().set_password(raw_password)
        if self.pk is not None:
            from accounts.tokens import tokens_revoke_all

            tokens_revoke_all(user=self)

    @property
    def is_manager(self) -> bool:
        return self.role == self.Role.MANAGER

    @property
    def sees_everything(self) -> bool:
        return self.is_superuser or self.role == self.Role.ADMIN

    def __str__(self) -> str:
        return self.get_full_name() or self.username


class ApiToken(models.Model):
    """A per-user API key. Only its SHA-256 digest is stored; the key is shown once, at creation.

    Keys are 256-bit random strings, so a fast digest is enough: there is nothing to guess
    from it. Revoking sets `revoked_at`; a revoked or expired token authenticates nobody.
    """

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True, help_text="What the token is for (e.g. ERP sync).")
    prefix = models.CharField(max_length=12, help_text="The first characters of the key, to recognise it.")
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "id"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"

"""App config for customer lifetime value: the engine, the nightly run and its results."""

from django.apps import AppConfig


class ClvConfig(AppConfig):
    name = "clv"
    verbose_name = "Customer lifetime value"

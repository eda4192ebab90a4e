"""markd: a multi-source price oracle for a cross-margin perpetuals venue."""

__version__ = "0.1.0"

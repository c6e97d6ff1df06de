"""Errors a user can cause (bad config, bad input files)."""


class FundiffError(ValueError):
    """A user-facing error whose message names the offending file or config key."""

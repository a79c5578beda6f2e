"""Errors meant for the person running the workflow, not for a traceback reader."""


class PlmscaleError(Exception):
    """A problem the user can fix: the message names the file (and line) and says what to do."""

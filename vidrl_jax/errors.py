"""The one error type a user sees: a single sentence saying what is wrong and how to fix it."""


class VidrlError(Exception):
  """Bad input (data, config, shapes) or a run that cannot continue (non-finite loss).

  Launchers print the message alone, without a traceback, and exit with status 1.
  """

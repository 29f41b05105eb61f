"""The one exception type that the CLI turns into a one-line message and exit code 2."""


class RiswbError(Exception):
    """Bad usage or unusable input (a missing run, a malformed config, an unknown preset).

    Library code raises it with a message a user can act on; `riswb.cli` prints that
    message on one line and exits with code 2 (RISWB_DEBUG=1 shows the traceback).
    """

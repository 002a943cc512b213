"""What is not the product: benchmarks, corpus generators, the emulated Snowflake account."""

import signal


def exit_on_sigterm() -> None:
    """SIGTERM (``kill``, a CI timeout) unwinds like Ctrl-C, so every ``finally`` that stops a
    Ray head or a server this process started still runs."""

    def handler(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)

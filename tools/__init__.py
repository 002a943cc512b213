"""What is not the product: benchmarks, corpus generators, the emulated Snowflake account."""

import signal


def exit_on_sigterm() -> None:
    """SIGTERM (``kill``, a CI timeout) unwinds like Ctrl-C, so every ``finally`` that stops a
    Ray head or a server this process started still runs."""

    def handler(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)
    # Started in the background (``cmd &``), a process inherits SIGINT ignored. Dagster maps
    # SIGTERM to SIGINT's handler after every in-process run (``setup_interrupt_handlers``),
    # which then made SIGTERM ignored too, here and in every child started afterwards: a test's
    # ``terminate()`` of its HTTP server waited for ever. Ctrl-C semantics, whatever the parent.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)

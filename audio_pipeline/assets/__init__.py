"""Assets. Two warnings that Dagster raises about its own code, in every process, are silenced."""

import warnings

import dagster as dg

# BackfillPolicy.single_run() (a backfill is one job) is the design; Dagster calls it beta.
warnings.filterwarnings("ignore", "Parameter `backfill_policy`", dg.BetaWarning)
# Dagster's own Pipes message handler reads this preview property in every Pipes session.
warnings.filterwarnings(
    "ignore", "Function `PipesMessageReader.expected_writer_count`", dg.PreviewWarning
)

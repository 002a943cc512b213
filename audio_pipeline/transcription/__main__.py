"""``python -m audio_pipeline.transcription``: the payload, on a Ray cluster or in an ML Job."""

import sys

from .entry import main

if __name__ == "__main__":
    sys.exit(main())

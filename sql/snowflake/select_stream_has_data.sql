-- Cloud services only (no warehouse): does the stage's stream hold changes?
-- Parameters: %(stream)s (the stream's fully qualified, quoted name).
SELECT SYSTEM$STREAM_HAS_DATA(%(stream)s);

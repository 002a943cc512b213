-- The ML Job runtime image for a compute pool and a selector (JSON naming the client's
-- pythonVersion), as the ML Jobs SDK asks for it; NULL when there is none.
CALL SYSTEM$GET_ML_JOB_RUNTIME(%(pool)s, %(selector)s);

-- A pre-signed URL for one stage file (SSE stages only). Parameters: %(path)s, %(lifetime_s)s.
SELECT GET_PRESIGNED_URL(@{stage}, %(path)s, %(lifetime_s)s);

-- The instance family of a pool cannot change; sizes and suspension can.
ALTER COMPUTE POOL {pool} SET
    MIN_NODES = %(min_nodes)s
    MAX_NODES = %(max_nodes)s
    AUTO_RESUME = %(auto_resume)s
    AUTO_SUSPEND_SECS = %(auto_suspend_secs)s;

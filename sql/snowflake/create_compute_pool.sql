-- Parameters: %(min_nodes)s, %(max_nodes)s, %(auto_resume)s, %(auto_suspend_secs)s,
-- %(initially_suspended)s; {instance_family} is a validated keyword.
CREATE COMPUTE POOL IF NOT EXISTS {pool}
    MIN_NODES = %(min_nodes)s
    MAX_NODES = %(max_nodes)s
    INSTANCE_FAMILY = {instance_family}
    AUTO_RESUME = %(auto_resume)s
    AUTO_SUSPEND_SECS = %(auto_suspend_secs)s
    INITIALLY_SUSPENDED = %(initially_suspended)s;

-- Egress only to the hosts the jobs need (%(hosts)s: a list of 'host:443' strings, one bound value each), never 0.0.0.0.
CREATE NETWORK RULE IF NOT EXISTS {rule}
    MODE = EGRESS TYPE = HOST_PORT VALUE_LIST = (%(hosts)s);
ALTER NETWORK RULE {rule} SET VALUE_LIST = (%(hosts)s);

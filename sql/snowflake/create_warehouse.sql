-- The query warehouse of ML Jobs and of the store's SQL; suspended when idle.
CREATE WAREHOUSE IF NOT EXISTS {warehouse}
    WAREHOUSE_SIZE = 'XSMALL' AUTO_SUSPEND = 60 AUTO_RESUME = TRUE INITIALLY_SUSPENDED = TRUE;

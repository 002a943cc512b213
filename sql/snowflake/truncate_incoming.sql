TRUNCATE TABLE {incoming};

-- Fallback where the directory table is unavailable.
LIST @{stage};

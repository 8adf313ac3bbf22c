"""Demo city: districts, Smart Data Model sensors, realistic daily patterns, streaming."""

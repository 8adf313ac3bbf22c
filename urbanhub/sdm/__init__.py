"""FIWARE Smart Data Models: shipped schemas, offline validation, NGSI-v2 conversion."""

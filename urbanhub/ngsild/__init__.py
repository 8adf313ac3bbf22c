"""The NGSI-LD standard (ETSI GS CIM 009): JSON-LD terms, entity payloads, query language.

Everything here except the context loader is pure: it turns payloads into the hub's
internal form (attribute names and types expanded to IRIs) and back.
"""

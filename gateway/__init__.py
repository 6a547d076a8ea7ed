"""dsgateway: federated, non-disclosive DataSHIELD analysis."""

__version__ = "0.1.0"

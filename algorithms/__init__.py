"""Federated DataSHIELD analyses for Python researchers.

Each function takes an open `datashield.DSSession` (any driver, e.g. datashield-opal
against dsgateway nodes), calls the dsBase-compatible server functions on every node,
and combines their answers as the pooled analysis would. See docs/python-algorithms.md.

>>> from datashield import DSLoginBuilder, DSSession            # doctest: +SKIP
>>> import algorithms as ds                                     # doctest: +SKIP
>>> session = DSSession(DSLoginBuilder()
...     .add("node1", "https://node1.example.org", "alice", "secret")
...     .add("node2", "https://node2.example.org", "alice", "secret").build())
>>> session.open(); session.assign_table("D", "demo.cohort.patients")
>>> ds.mean(session, "D$age")                                   # doctest: +SKIP
"""

from algorithms._calls import COMBINED
from algorithms.corcov import Correlation, Covariance, cor, cov
from algorithms.descriptive import QUANTILES, mean, quantile_mean, summary, var
from algorithms.errors import DataSHIELDError, NodeError
from algorithms.histograms import Histogram, histogram, plot_histogram
from algorithms.objects import classes, colnames, dim, disclosure_settings, length
from algorithms.regression import FAMILIES, GLMResult, glm
from algorithms.subsets import OPERATORS, subset
from algorithms.tables import NA_LABEL, Table, levels, table

__all__ = [
    "COMBINED",
    "FAMILIES",
    "NA_LABEL",
    "OPERATORS",
    "QUANTILES",
    "Correlation",
    "Covariance",
    "DataSHIELDError",
    "GLMResult",
    "Histogram",
    "NodeError",
    "Table",
    "classes",
    "colnames",
    "cor",
    "cov",
    "dim",
    "disclosure_settings",
    "glm",
    "histogram",
    "length",
    "levels",
    "mean",
    "plot_histogram",
    "quantile_mean",
    "subset",
    "summary",
    "table",
    "var",
]

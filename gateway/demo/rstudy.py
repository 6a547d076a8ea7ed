"""The demo's study in R (DSI + DSMolgenisArmadillo + dsBaseClient through the relay).

Kept as a string, not a .R file, so that it ships inside the Python package without
package-data settings; `dsgateway demo` writes it to ``<workdir>/study.R``.
"""

__all__ = ["R_STUDY"]

R_STUDY = """\
# The demo's study from R: DSI + DSMolgenisArmadillo + dsBaseClient through the
# coordinator's relay, one relay token per station from one login at the coordinator.
# `dsgateway demo` runs this when those packages are installed; set DSG_COORDINATOR,
# DSG_RELAY, DSG_USER and DSG_PASSWORD (see credentials.json in the demo's folder).
library(httr)
library(DSI)
library(DSMolgenisArmadillo)
library(dsBaseClient)

coordinator <- Sys.getenv("DSG_COORDINATOR")
relay <- Sys.getenv("DSG_RELAY")
api <- function(verb, path, token = NULL, body = NULL) {
  auth <- if (is.null(token)) NULL else add_headers(Authorization = paste("Bearer", token))
  r <- VERB(verb, paste0(coordinator, "/api", path), auth, body = body, encode = "json")
  stop_for_status(r)
  content(r)
}

login <- api("POST", "/auth/login",
             body = list(username = Sys.getenv("DSG_USER"), password = Sys.getenv("DSG_PASSWORD")))
access <- login$access_token
study <- api("GET", "/collaborations", access)[[1]]
nodes <- api("GET", paste0("/nodes?collaboration_id=", study$id), access)

builder <- newDSLoginBuilder()
for (node in nodes) {
  token <- api("POST", "/auth/relay-token", access, list(node_id = node$id))$token
  builder$append(server = node$name, url = relay, token = token,
                 driver = "ArmadilloDriver", profile = "default",
                 table = "ms/registry/covid19")
}
conns <- datashield.login(builder$build(), assign = TRUE, symbol = "D")

print(ds.dim("D", datasources = conns))
print(ds.mean("D$age", type = "both", datasources = conns))
print(ds.var("D$edss", type = "both", datasources = conns))
print(ds.table("D$dmt", "D$severe", datasources = conns))
fit <- ds.glm(severe ~ dmt + age + sex + edss, data = "D", family = "binomial",
              datasources = conns)
print(fit$coefficients)
datashield.logout(conns)
"""
